// manifest.json of a bundle (format "sfv-bundle", version 2; README "Bundle format"): the model
// config the runtime needs and, per network, the chosen precision's graph file and signature.
// Error messages are the Python runtime's (contract/bundle.py), word for word where they overlap.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "sampling.hpp"

namespace sfv::detail {

constexpr const char* kFormat = "sfv-bundle";
constexpr int kFormatVersion = 2;

/// The networks a clip needs, in pipeline order.
extern const std::vector<std::string> kNetworks;
/// Networks loaded when the bundle has them (contract/specs.py OPTIONAL_NETWORKS).
extern const std::vector<std::string> kOptionalNetworks;

struct TensorInfo {
    std::string name, dtype;
};

struct NetworkInfo {
    std::string name;
    std::string precision;      ///< the variant chosen
    std::string file;           ///< absolute-or-relative path: bundle root / manifest "file"
    std::string sha256;         ///< empty when the manifest records none
    std::vector<TensorInfo> inputs, outputs;
};

struct ModelConfig {
    int latent_channels = 4, vae_scale_factor = 8, unet_downsample = 8, embed_dim = 1024;
    int clip_image_size = 224, num_frames = 0, default_height = 576, default_width = 1024;  // num_frames: required in the manifest
    double scaling_factor = 0.18215, sigma_min = 0.002, sigma_max = 700.0;
    std::string prediction_type = "v_prediction";
    // generation defaults (contract/specs.py ModelConfig)
    int steps = 25, fps = 7, motion_bucket_id = 127;
    double min_guidance = 1.0, max_guidance = 3.0, noise_aug_strength = 0.02;
    int pixel_multiple() const { return vae_scale_factor * unet_downsample; }
};

/// The manifest's optional "sampler" (contract/bundle.py SamplerConfig): absent = euler with model.config's
/// defaults; unset steps/guidance take model.config's.
struct SamplerConfig {
    std::string name = "euler";
    std::optional<int> steps;
    std::optional<double> min_guidance, max_guidance;
    LCMParams params;  ///< lcm's constants (defaults: AnimateLCM's)
    /// The defaults a sampler brings when a call picks it over the bundle's (Python SamplerConfig.builtin).
    static SamplerConfig builtin(const std::string& name);
};

struct Manifest {
    std::string root;
    ModelConfig config;
    SamplerConfig sampler;
    std::vector<NetworkInfo> networks;  ///< kNetworks order, then the optional ones the bundle has
    const NetworkInfo& network(const std::string& name) const;
};

/// Read and check root/manifest.json and the graph files: the `precision` variant of each network
/// where the bundle has it, else fp32 (as engines/factory.py). BundleError with the fix.
Manifest load_manifest(const std::string& root, const std::string& precision);

/// sha256 of each network's graph against the manifest (BundleError naming the file).
void verify_checksums(const Manifest& manifest);
/// The same for one network (no-op when the manifest records no sha256).
void verify_checksum(const NetworkInfo& network);

/// Python's check_resolution: InputError unless height/width are positive multiples of the pixel multiple.
void check_resolution(const ModelConfig& config, int height, int width);

}  // namespace sfv::detail
