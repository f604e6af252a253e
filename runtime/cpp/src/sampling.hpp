// The sampler's arithmetic, in the exact float32/double order of the Python runtime
// (runtime/sampling.py, runtime/denoiser.py, runtime/pipeline.py): Karras schedule, EDM
// scalings, per-frame guidance, Euler step, the VAE's view of the image and the uint8 frames.
// A change here is a change there: tests/test_cpp_runtime.py compares the two runtimes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sfv::detail {

/// Karras sigmas for `steps` levels (computed in double, rounded to float) followed by 0: [steps + 1].
std::vector<float> karras_sigmas(int steps, double sigma_min, double sigma_max, double rho = 7.0);

/// The UNet's timestep input for a level: float(0.25 * ln(double(sigma))).
float c_noise(float sigma);

/// The scale of unit-normal initial latents: sqrtf(sigma0^2 + 1).
float initial_noise_scale(float sigma0);

/// Per-frame guidance weights [frames]: linspace(min, max) in double, rounded to float.
std::vector<float> guidance_weights(double min_guidance, double max_guidance, int frames);

/// UNet sample input for one batch element: x / sqrt(sigma^2 + 1) ‖ image latent on channels.
/// x [F, C, hw], image_latent [C, hw] (or null for zeros) -> out [F, 2C, hw].
void unet_sample(const float* x, const float* image_latent, float sigma, int frames, int channels, std::size_t hw, float* out);

/// Classifier-free guidance in place: cond[f] = uncond[f] + w[f] * (cond[f] - uncond[f]); per frame of `frame_size` values.
void apply_guidance(const float* uncond, float* cond, const std::vector<float>& w, std::size_t frame_size);

/// One Euler step in place from the v-prediction output F: x += d * (sigma_next - sigma).
void euler_step(float* x, const float* model_out, std::size_t n, float sigma, float sigma_next);

/// The consistency sampler's constants (export/bundle.py LCMParams; AnimateLCM-SVD-xt's scheduler).
struct LCMParams {
    int num_train_timesteps = 40;
    double sigma_min = 0.002, sigma_max = 700.0, sigma_data = 1.0, s_noise = 1.0, rho = 7.0;
    bool clip_denoised = false;
};

/// runtime/sampling.py lcm_schedule: of num_train_timesteps Karras levels (double), the steps at
/// j = k * (N / steps); sigmas [steps + 1] rounded to float (last 0), timesteps [steps] =
/// float(0.25 * ln(double sigma)) from the unrounded sigmas.
void lcm_schedule(int steps, const LCMParams& p, std::vector<float>& sigmas, std::vector<float>& timesteps);

/// float(sqrt(sigma_max^2 + 1)) in double: the scale of the lcm sampler's unit-normal initial latents.
float lcm_initial_noise_scale(const LCMParams& p);

/// UNet sample input with c_in = 1 / sqrt(sigma^2 + sigma_data^2) (sigma_data 1 is unet_sample's).
void unet_sample_scaled(const float* x, const float* image_latent, float sigma, float sd2, int frames, int channels, std::size_t hw,
                        float* out);

/// One consistency step in place (runtime/sampling.py sample_lcm): x0 = c_out * F + c_skip * x
/// (clamped to [-1, 1] with clip_denoised), then x = x0 + (z * s_noise) * sigma_next, or x = x0
/// when z is null (the last step).
void lcm_step(float* x, const float* model_out, const float* z, std::size_t n, float sigma, float sigma_next, const LCMParams& p);

/// The VAE's input: RGB8 [H, W, 3] -> float [1, 3, H, W] in [-1, 1] (2 * (u8 / 255) - 1).
std::vector<float> vae_view(const std::uint8_t* rgb, int width, int height);

/// Decoder output [n, 3, H, W] -> uint8 frames [n, H, W, 3] appended at `out` (diffusers' rounding).
void to_uint8(const float* sample, int n, int height, int width, std::uint8_t* out);

}  // namespace sfv::detail
