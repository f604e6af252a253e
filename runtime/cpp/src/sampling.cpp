#include "sampling.hpp"

#include <algorithm>
#include <cmath>

namespace sfv::detail {

std::vector<float> karras_sigmas(int steps, double sigma_min, double sigma_max, double rho) {
    const double min_inv = std::pow(sigma_min, 1.0 / rho), max_inv = std::pow(sigma_max, 1.0 / rho);
    std::vector<float> s(steps + 1, 0.0f);
    const double step = steps > 1 ? 1.0 / (steps - 1) : 0.0;
    for (int i = 0; i < steps; ++i) {
        double ramp = (steps > 1 && i == steps - 1) ? 1.0 : i * step;  // numpy linspace ends exactly at 1
        s[i] = float(std::pow(max_inv + ramp * (min_inv - max_inv), rho));
    }
    return s;
}

float c_noise(float sigma) { return float(0.25 * std::log(double(sigma))); }

float initial_noise_scale(float sigma0) { return std::sqrt(sigma0 * sigma0 + 1.0f); }

std::vector<float> guidance_weights(double min_guidance, double max_guidance, int frames) {
    std::vector<float> w(frames);
    if (frames == 1) return {float(min_guidance)};
    const double step = (max_guidance - min_guidance) / (frames - 1);
    for (int f = 0; f < frames; ++f) w[f] = float(min_guidance + f * step);
    w[frames - 1] = float(max_guidance);
    return w;
}

void unet_sample(const float* x, const float* image_latent, float sigma, int frames, int channels, std::size_t hw, float* out) {
    unet_sample_scaled(x, image_latent, sigma, 1.0f, frames, channels, hw, out);
}

void apply_guidance(const float* uncond, float* cond, const std::vector<float>& w, std::size_t frame_size) {
    for (std::size_t f = 0; f < w.size(); ++f)
        for (std::size_t i = f * frame_size; i < (f + 1) * frame_size; ++i) cond[i] = uncond[i] + w[f] * (cond[i] - uncond[i]);
}

void euler_step(float* x, const float* model_out, std::size_t n, float sigma, float sigma_next) {
    const float q = std::sqrt(sigma * sigma + 1.0f);
    const float c_out = -sigma / q;
    const float skip_den = sigma * sigma + 1.0f;
    const float dt = sigma_next - sigma;
    for (std::size_t i = 0; i < n; ++i) {
        float denoised = model_out[i] * c_out + x[i] / skip_den;
        float d = (x[i] - denoised) / sigma;
        x[i] = x[i] + d * dt;
    }
}

void lcm_schedule(int steps, const LCMParams& p, std::vector<float>& sigmas, std::vector<float>& timesteps) {
    const int ratio = p.num_train_timesteps / steps;
    const double min_inv = std::pow(p.sigma_min, 1.0 / p.rho), max_inv = std::pow(p.sigma_max, 1.0 / p.rho);
    sigmas.assign(steps + 1, 0.0f);
    timesteps.assign(steps, 0.0f);
    for (int k = 0; k < steps; ++k) {
        const double ramp = double(std::int64_t(k) * ratio) / double(p.num_train_timesteps - 1);
        const double sigma = std::pow(max_inv + ramp * (min_inv - max_inv), p.rho);
        sigmas[k] = float(sigma);
        timesteps[k] = float(0.25 * std::log(sigma));
    }
}

float lcm_initial_noise_scale(const LCMParams& p) { return float(std::sqrt(p.sigma_max * p.sigma_max + 1.0)); }

void unet_sample_scaled(const float* x, const float* image_latent, float sigma, float sd2, int frames, int channels, std::size_t hw,
                        float* out) {
    const float q = std::sqrt(sigma * sigma + sd2);
    const std::size_t plane = std::size_t(channels) * hw;
    for (int f = 0; f < frames; ++f) {
        const float* xf = x + f * plane;
        float* o = out + f * 2 * plane;
        for (std::size_t i = 0; i < plane; ++i) o[i] = xf[i] / q;
        if (image_latent)
            std::copy(image_latent, image_latent + plane, o + plane);
        else
            std::fill(o + plane, o + 2 * plane, 0.0f);
    }
}

void lcm_step(float* x, const float* model_out, const float* z, std::size_t n, float sigma, float sigma_next, const LCMParams& p) {
    const float sd2 = float(p.sigma_data * p.sigma_data);
    const float den = sigma * sigma + sd2;
    const float c_skip = 1.0f / den * sd2;
    const float c_out = (-sigma * float(p.sigma_data)) / std::sqrt(den);
    const float s_noise = float(p.s_noise);
    for (std::size_t i = 0; i < n; ++i) {
        float denoised = c_out * model_out[i] + c_skip * x[i];
        if (p.clip_denoised) denoised = std::min(1.0f, std::max(-1.0f, denoised));
        x[i] = z ? denoised + (z[i] * s_noise) * sigma_next : denoised;
    }
}

std::vector<float> vae_view(const std::uint8_t* rgb, int width, int height) {
    const std::size_t hw = std::size_t(width) * height;
    std::vector<float> out(3 * hw);
    for (std::size_t p = 0; p < hw; ++p)
        for (int c = 0; c < 3; ++c) {
            float v = float(rgb[3 * p + c]) / 255.0f;
            out[c * hw + p] = 2.0f * v - 1.0f;
        }
    return out;
}

void to_uint8(const float* sample, int n, int height, int width, std::uint8_t* out) {
    const std::size_t hw = std::size_t(width) * height;
    for (int f = 0; f < n; ++f)
        for (std::size_t p = 0; p < hw; ++p)
            for (int c = 0; c < 3; ++c) {
                float v = sample[(std::size_t(f) * 3 + c) * hw + p] / 2.0f + 0.5f;
                v = std::min(1.0f, std::max(0.0f, v)) * 255.0f;
                out[(std::size_t(f) * hw + p) * 3 + c] = std::uint8_t(std::nearbyint(v));
            }
}

}  // namespace sfv::detail
