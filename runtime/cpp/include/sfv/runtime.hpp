// sfv_runtime: run an exported sfv-deploy bundle (Stable Video Diffusion / SF-V) with ONNX Runtime.
//
//   sfv::Runtime rt("bundle/");                       // reads manifest.json, checks sha256, opens sessions
//   sfv::GenerateOptions o; o.steps = 1; o.max_guidance = 1.0;   // SF-V's one step; unset = manifest default
//   sfv::Clip clip = rt.generate({pixels, width, height}, o);    // RGB8 in, RGB8 [F, H, W, 3] out
//
// The numerics (resize, noise, schedule, guidance, Euler or consistency (lcm) step, uint8 conversion) are those of the
// Python runtime (`runtime/`), so both give the same frames for the same bundle and noise.
// Errors are exceptions derived from sfv::Error whose message names the problem and the fix.
//
// Header-only: a C++ layer over the C API of sfv.h (the library's only exported interface), so no
// C++ type crosses the shared library's boundary; the value types below are plain structs.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sfv/sfv.h"

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
/// ONNX Runtime failed: an execution provider (CUDA, TensorRT) or a precision is not available,
/// or a run failed (out of memory, provider error); the message is ONNX Runtime's.
class BackendError : public Error {
  public:
    using Error::Error;
};
/// GenerateOptions::progress asked to stop; no clip was made.
class Cancelled : public Error {
  public:
    using Error::Error;
};

enum class Provider { cpu = SFV_PROVIDER_CPU, cuda = SFV_PROVIDER_CUDA, tensorrt = SFV_PROVIDER_TENSORRT };

/// How the bundle is opened.
struct RuntimeOptions {
    Provider provider = Provider::cpu;  ///< tensorrt falls back to cuda then cpu per node, as in ONNX Runtime
    int device_id = 0;                  ///< GPU for cuda / tensorrt
    int threads = 0;                    ///< CPU intra-op threads; 0 lets ONNX Runtime choose
    std::string precision = "fp32";     ///< graph variant: fp32 | fp16 | int8 | fp8 (fp32 where the bundle lacks it)
    bool verify_checksums = true;       ///< sha256 of each graph against the manifest
    std::string trt_cache_dir;          ///< TensorRT's engine cache; empty: BUNDLE/trt_cache
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
    std::vector<std::int64_t> seeds;          ///< several images: one seed per image (default seed + i)
    const Noise* noise = nullptr;             ///< explicit noise instead of the seed (not owned); the first image's
    std::vector<const Noise*> noises;         ///< several images: explicit noise per image (null: its seed)
    /// Called per stage and per UNet step from the generating thread; returning true cancels
    /// (generate() then throws Cancelled and makes no clip).
    std::function<bool(const sfv_progress&)> progress;
};

/// Wall-clock seconds per stage of one generate() call, all its images together (Python's stages: `sampler` is the
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

namespace capi {

/// The C API's status as this header's exception, with the thread's last-error message.
inline void check(sfv_status status) {
    if (status == SFV_STATUS_OK) return;
    const std::string what = sfv_last_error();
    switch (status) {
        case SFV_STATUS_BUNDLE_ERROR: throw BundleError(what);
        case SFV_STATUS_INPUT_ERROR: throw InputError(what);
        case SFV_STATUS_BACKEND_ERROR: throw BackendError(what);
        case SFV_STATUS_CANCELLED: throw Cancelled(what);
        case SFV_STATUS_OUT_OF_MEMORY: throw std::bad_alloc();
        default: throw Error(what);
    }
}

template <class T, void (*Destroy)(T*)>
struct Deleter {
    void operator()(T* p) const { Destroy(p); }
};
template <class T, void (*Destroy)(T*)>
using Handle = std::unique_ptr<T, Deleter<T, Destroy>>;

/// The C callback that calls GenerateOptions::progress; an exception it throws cancels the call
/// and is rethrown by generate() (it never crosses the C library).
struct ProgressBridge {
    const std::function<bool(const sfv_progress&)>* callback = nullptr;
    std::exception_ptr error;
    static int call(const sfv_progress* event, void* user_data) {
        auto* self = static_cast<ProgressBridge*>(user_data);
        try {
            return (*self->callback)(*event) ? 1 : 0;
        } catch (...) {
            self->error = std::current_exception();
            return 1;
        }
    }
};

inline void set_noise(sfv_options* o, std::size_t index, const Noise& n) {
    const std::pair<const char*, const std::vector<float>*> arrays[] = {{"augmentation", &n.augmentation}, {"latents", &n.latents}, {"steps", &n.steps}};
    const std::vector<std::int64_t>* shapes[] = {&n.augmentation_shape, &n.latents_shape, &n.steps_shape};
    for (int k = 0; k < 3; ++k) {
        if (k == 2 && n.steps.empty()) continue;
        const auto& shape = *shapes[k];
        check(sfv_options_set_noise(o, index, arrays[k].first, arrays[k].second->data(), arrays[k].second->size(),
                                    shape.empty() ? nullptr : shape.data(), shape.size(), n.source.c_str()));
    }
}

}  // namespace capi

/// A loaded bundle with one ONNX Runtime session per network: a header-only wrapper of the C API's
/// sfv_runtime (sfv.h). Not copyable; one Runtime may generate from several threads at once.
class Runtime {
  public:
    explicit Runtime(const std::string& bundle_dir, const RuntimeOptions& options = {}) {
        sfv_runtime_options* raw = nullptr;
        capi::check(sfv_runtime_options_create(&raw));
        capi::Handle<sfv_runtime_options, sfv_runtime_options_destroy> o(raw);
        capi::check(sfv_runtime_options_set_provider(raw, sfv_provider(options.provider), options.device_id));
        capi::check(sfv_runtime_options_set_threads(raw, options.threads));
        capi::check(sfv_runtime_options_set_precision(raw, options.precision.c_str()));
        capi::check(sfv_runtime_options_set_verify_checksums(raw, options.verify_checksums));
        if (!options.trt_cache_dir.empty()) capi::check(sfv_runtime_options_set_trt_cache_dir(raw, options.trt_cache_dir.c_str()));
        sfv_runtime* rt = nullptr;
        capi::check(sfv_runtime_open(bundle_dir.c_str(), raw, &rt));
        handle_.reset(rt);
        sfv_model_info m{};
        capi::check(sfv_runtime_model(rt, &m));
        info_.num_frames = m.num_frames, info_.default_height = m.default_height, info_.default_width = m.default_width;
        info_.latent_channels = m.latent_channels, info_.vae_scale_factor = m.vae_scale_factor, info_.pixel_multiple = m.pixel_multiple;
        info_.fast_decoder = m.fast_decoder != 0, info_.sampler = m.sampler;
        for (std::size_t i = 0; const char* n = sfv_runtime_fp32_fallback(rt, i); ++i) info_.fp32_fallback.push_back(n);
    }

    const ModelInfo& model() const { return info_; }

    /// Checks the options first (InputError), then runs every stage.
    Clip generate(const ImageView& image, const GenerateOptions& options = {}) const {
        return std::move(generate(std::vector<ImageView>{image}, options).front());
    }

    /// One clip per image, denoised together (one UNet batch); image i draws with
    /// options.seeds[i], else options.seed + i, unless options.noises[i] gives its noise.
    std::vector<Clip> generate(const std::vector<ImageView>& images, const GenerateOptions& options = {}) const {
        sfv_options* raw = nullptr;
        capi::check(sfv_options_create(&raw));
        capi::Handle<sfv_options, sfv_options_destroy> o(raw);
        if (options.num_frames) capi::check(sfv_options_set_num_frames(raw, *options.num_frames));
        if (options.height || options.width)
            capi::check(sfv_options_set_size(raw, options.height.value_or(0), options.width.value_or(0)));
        if (options.sampler) capi::check(sfv_options_set_sampler(raw, options.sampler->c_str()));
        if (options.steps) capi::check(sfv_options_set_steps(raw, *options.steps));
        if (options.min_guidance) capi::check(sfv_options_set_min_guidance(raw, *options.min_guidance));
        if (options.max_guidance) capi::check(sfv_options_set_max_guidance(raw, *options.max_guidance));
        if (options.fps) capi::check(sfv_options_set_fps(raw, *options.fps));
        if (options.motion_bucket_id) capi::check(sfv_options_set_motion_bucket_id(raw, *options.motion_bucket_id));
        if (options.noise_aug_strength) capi::check(sfv_options_set_noise_aug_strength(raw, *options.noise_aug_strength));
        if (options.decode_chunk_size) capi::check(sfv_options_set_decode_chunk_size(raw, *options.decode_chunk_size));
        capi::check(sfv_options_set_decoder(raw, options.decoder.c_str()));
        capi::check(sfv_options_set_seed(raw, options.seed));
        if (!options.seeds.empty()) capi::check(sfv_options_set_seeds(raw, options.seeds.data(), options.seeds.size()));
        if (options.noise) capi::set_noise(raw, 0, *options.noise);
        for (std::size_t i = 0; i < options.noises.size(); ++i)
            if (options.noises[i]) capi::set_noise(raw, i, *options.noises[i]);
        capi::ProgressBridge bridge{&options.progress, nullptr};
        if (options.progress) capi::check(sfv_options_set_progress(raw, &capi::ProgressBridge::call, &bridge));

        std::vector<sfv_image> views;
        for (const auto& im : images) views.push_back({im.pixels, im.width, im.height});
        sfv_result* result = nullptr;
        const sfv_status status = sfv_generate(handle_.get(), views.data(), views.size(), raw, &result);
        if (bridge.error) std::rethrow_exception(bridge.error);
        capi::check(status);
        capi::Handle<sfv_result, sfv_result_destroy> r(result);
        sfv_timings t{};
        capi::check(sfv_result_timings(result, &t));
        std::vector<Clip> clips(sfv_result_count(result));
        for (std::size_t i = 0; i < clips.size(); ++i) {
            sfv_clip c{};
            capi::check(sfv_result_clip(result, i, &c));
            clips[i].frames = c.frames, clips[i].height = c.height, clips[i].width = c.width;
            clips[i].rgb.assign(c.rgb, c.rgb + c.rgb_size);
            clips[i].latents.assign(c.latents, c.latents + c.latents_count);
            clips[i].timings = {t.preprocess, t.image_encoder, t.vae_encoder, t.unet, t.sampler, t.vae_decoder, t.total, t.unet_calls};
        }
        return clips;
    }

    /// The C handle, for code that mixes both APIs (owned by this Runtime).
    const sfv_runtime* handle() const { return handle_.get(); }

  private:
    capi::Handle<sfv_runtime, sfv_runtime_close> handle_;
    ModelInfo info_;
};

}  // namespace sfv
