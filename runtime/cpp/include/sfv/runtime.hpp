// sfv_runtime: run an exported sfv-deploy bundle (Stable Video Diffusion / SF-V) with ONNX Runtime.
//
//   sfv::Runtime rt("bundle/");                       // reads manifest.json, checks sha256, opens sessions
//   sfv::GenerateOptions o; o.steps = 1; o.max_guidance = 1.0;   // SF-V's one step; unset = manifest default
//   sfv::Clip clip = rt.generate({pixels, width, height}, o);    // RGB8 in, RGB8 [F, H, W, 3] out
//
// The numerics (resize, noise, schedule, guidance, Euler or consistency (lcm) step, uint8 conversion) are those of the
// Python runtime (`runtime/`), so both give the same frames for the same bundle and noise.
// Errors are exceptions derived from sfv::Error whose message names the problem and the fix.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace sfv {

/// Base class of every error this library throws on purpose.
class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};
/// The bundle directory or its manifest is missing, of another format version, or a graph is corrupt.
class BundleError : public Error {
  public:
    using Error::Error;
};
/// A generation option or input (size, frame count, explicit noise) is out of range.
class InputError : public Error {
  public:
    using Error::Error;
};
/// An execution provider (CUDA, TensorRT) or a precision is not available.
class BackendError : public Error {
  public:
    using Error::Error;
};

enum class Provider { cpu, cuda, tensorrt };

/// How the bundle is opened.
struct RuntimeOptions {
    Provider provider = Provider::cpu;  ///< tensorrt falls back to cuda then cpu per node, as in ONNX Runtime
    int device_id = 0;                  ///< GPU for cuda / tensorrt
    int threads = 0;                    ///< CPU intra-op threads; 0 lets ONNX Runtime choose
    std::string precision = "fp32";     ///< graph variant: fp32 | fp16 | int8 | fp8 (fp32 where the bundle lacks it)
    bool verify_checksums = true;       ///< sha256 of each graph against the manifest
};

/// Tightly packed RGB8 pixels, row-major [height, width, 3]; not owned.
struct ImageView {
    const std::uint8_t* pixels = nullptr;
    int width = 0;
    int height = 0;
};

/// Explicit noise, to reproduce another runtime exactly (unit normal draws, not yet scaled).
/// Shapes, when given, are checked exactly (else only the element counts); `source` names it in errors.
struct Noise {
    std::vector<float> augmentation;  ///< [1, 3, height, width]
    std::vector<float> latents;       ///< [1, frames, latent_channels, height / 8, width / 8]
    std::vector<float> steps;         ///< sampler lcm only: [steps - 1, 1, frames, latent_channels, h, w], the draw after each step
    std::vector<std::int64_t> augmentation_shape, latents_shape, steps_shape;
    std::string source = "explicit noise";
};

/// Generation options, as Python's runtime.options.GenerateOptions: unset fields take the model's
/// defaults from the bundle manifest (model.config); decode_chunk_size defaults to all frames.
struct GenerateOptions {
    std::optional<int> num_frames, height, width;
    std::optional<std::string> sampler;       ///< "euler" or "lcm" (consistency sampling); unset = the bundle's
    std::optional<int> steps;                 ///< the sampler's default when unset; 1 with max_guidance <= 1 is SF-V's one step
    std::optional<double> min_guidance;       ///< guidance of the first frame
    std::optional<double> max_guidance;       ///< of the last frame; <= 1 turns classifier-free guidance off
    std::optional<int> fps;                   ///< conditioned as fps - 1
    std::optional<int> motion_bucket_id;
    std::optional<double> noise_aug_strength; ///< noise added to the conditioning image
    std::optional<int> decode_chunk_size;     ///< frames per VAE decoder call
    std::string decoder = "full";             ///< full (the model's temporal VAE decoder) | fast (the bundle's vae_decoder_fast)
    std::int64_t seed = 0;                    ///< seed of the portable splitmix64 generator (README), >= 0
    const Noise* noise = nullptr;             ///< explicit noise instead of the seed (not owned)
};

/// Wall-clock seconds per stage of one generate() call (Python's stages: `sampler` is the
/// denoising loop's own arithmetic, outside the UNet calls).
struct Timings {
    double preprocess = 0, image_encoder = 0, vae_encoder = 0, unet = 0, sampler = 0, vae_decoder = 0, total = 0;
    int unet_calls = 0;
};

struct Clip {
    int frames = 0, height = 0, width = 0;
    std::vector<std::uint8_t> rgb;  ///< [frames, height, width, 3]
    std::vector<float> latents;     ///< final latents [1, frames, latent_channels, height / 8, width / 8]
    Timings timings;
};

/// What the bundle's model expects (from manifest.json's model.config).
struct ModelInfo {
    int num_frames = 0, default_height = 0, default_width = 0;
    int latent_channels = 0, vae_scale_factor = 0, pixel_multiple = 0;
    bool fast_decoder = false;                ///< the bundle has vae_decoder_fast (GenerateOptions::decoder = "fast")
    std::vector<std::string> fp32_fallback;   ///< networks running fp32 because the bundle lacks RuntimeOptions::precision
    std::string sampler;  ///< the bundle's default sampler: "euler" or "lcm"
};

/// A loaded bundle with one ONNX Runtime session per network. Not copyable; generate() is const
/// but not meant to be called from several threads at once on one Runtime.
class Runtime {
  public:
    explicit Runtime(const std::string& bundle_dir, const RuntimeOptions& options = {});
    ~Runtime();
    Runtime(Runtime&&) noexcept;
    Runtime& operator=(Runtime&&) noexcept;
    Runtime(const Runtime&) = delete;
    Runtime& operator=(const Runtime&) = delete;

    const ModelInfo& model() const;
    /// Checks the options first (InputError), then runs every stage.
    Clip generate(const ImageView& image, const GenerateOptions& options = {}) const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sfv
