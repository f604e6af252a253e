// sfv::Runtime: orchestrates the bundle's five networks with the sampler of sampling.hpp.
// The stage order and every formula follow runtime/pipeline.py; see sampling.hpp.
#include "sfv/runtime.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "bundle.hpp"
#include "noise.hpp"
#include "resample.hpp"
#include "sampling.hpp"
#include "session.hpp"

namespace sfv {

using detail::Feed;
using I64 = std::vector<std::int64_t>;

struct Runtime::Impl {
    detail::Manifest manifest;
    ModelInfo info;
    std::map<std::string, std::unique_ptr<detail::Session>> sessions;
    const detail::Session& session(const std::string& n) const { return *sessions.at(n); }
};

Runtime::Runtime(const std::string& bundle_dir, const RuntimeOptions& options) : impl_(new Impl) {
    impl_->manifest = detail::load_manifest(bundle_dir, options.precision);
    if (options.verify_checksums) detail::verify_checksums(impl_->manifest);
    const auto& c = impl_->manifest.config;
    impl_->info = {c.num_frames, c.default_height, c.default_width, c.latent_channels, c.vae_scale_factor, c.pixel_multiple()};
    impl_->info.sampler = impl_->manifest.sampler.name;
    for (const auto& n : impl_->manifest.networks) {
        if (n.name == "vae_decoder_fast") impl_->info.fast_decoder = true;
        if (n.name != "clip_preprocess" && n.precision != options.precision) impl_->info.fp32_fallback.push_back(n.name);
    }
    RuntimeOptions cpu = options;
    cpu.provider = Provider::cpu;  // the pre-processing graph is tiny: always on the CPU, as in Python
    for (const auto& n : impl_->manifest.networks)
        impl_->sessions[n.name] = std::make_unique<detail::Session>(n, n.name == "clip_preprocess" ? cpu : options);
}

Runtime::~Runtime() = default;
Runtime::Runtime(Runtime&&) noexcept = default;
Runtime& Runtime::operator=(Runtime&&) noexcept = default;

const ModelInfo& Runtime::model() const { return impl_->info; }

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// Python's repr() of a float: the shortest text that reads back to the same double.
std::string py_float(double v) {
    char buf[32];
    for (int p = 1; p <= 17; ++p) {
        std::snprintf(buf, sizeof buf, "%.*g", p, v);
        if (std::strtod(buf, nullptr) == v) break;
    }
    std::string s = buf;
    if (s.find_first_of(".einn") == std::string::npos) s += ".0";
    return s;
}

std::string shape_str(const I64& s) {
    std::string r = "[";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

/// Options with the model's defaults filled in and checked, in runtime/options.py's order and words.
struct Resolved {
    int F, H, W, steps, fps, motion_bucket_id, chunk;
    double min_guidance, max_guidance, noise_aug;
    detail::SamplerConfig sampler;
};

/// The sampler a call runs (runtime/options.py chosen_sampler): the bundle's, or another's built-in defaults.
detail::SamplerConfig chosen_sampler(const std::optional<std::string>& name, const detail::SamplerConfig& bundle) {
    if (name && *name != "euler" && *name != "lcm") throw InputError("sampler (--sampler) must be one of euler, lcm, got '" + *name + "'");
    if (!name || *name == bundle.name) return bundle;
    return detail::SamplerConfig::builtin(*name);
}

Resolved resolve(const GenerateOptions& o, const detail::ModelConfig& c, const detail::SamplerConfig& bundle_sampler) {
    const detail::SamplerConfig s = chosen_sampler(o.sampler, bundle_sampler);
    Resolved r{o.num_frames.value_or(c.num_frames), o.height.value_or(c.default_height), o.width.value_or(c.default_width),
               o.steps.value_or(s.steps.value_or(c.steps)), o.fps.value_or(c.fps), o.motion_bucket_id.value_or(c.motion_bucket_id), 0,
               o.min_guidance.value_or(s.min_guidance.value_or(c.min_guidance)), o.max_guidance.value_or(s.max_guidance.value_or(c.max_guidance)),
               o.noise_aug_strength.value_or(c.noise_aug_strength), s};
    r.chunk = o.decode_chunk_size.value_or(r.F);
    const std::pair<const char*, int> ints[] = {{"num_frames (--frames)", r.F}, {"steps (--steps)", r.steps},
                                                {"decode_chunk_size (--decode-chunk)", r.chunk}, {"fps (--fps)", r.fps}};
    for (const auto& [label, value] : ints)
        if (value < 1) throw InputError(std::string(label) + " must be a positive integer, got " + std::to_string(value));
    if (o.seed < 0) throw InputError("seed (--seed) must be a non-negative integer, got " + std::to_string(o.seed));
    detail::check_resolution(c, r.H, r.W);
    if (r.min_guidance > r.max_guidance)
        throw InputError("min_guidance (--min-guidance) " + py_float(r.min_guidance) + " is above max_guidance (--max-guidance) " +
                         py_float(r.max_guidance) + ": the guidance weight rises linearly from the first frame (min) to the last (max); swap them");
    if (!(r.noise_aug >= 0)) throw InputError("noise_aug_strength (--noise-aug) must be >= 0, got " + py_float(r.noise_aug));
    if (o.decoder != "full" && o.decoder != "fast")
        throw InputError("decoder (--decoder) must be one of full, fast, got '" + o.decoder + "'");
    const int n_train = r.sampler.params.num_train_timesteps;
    if (r.sampler.name == "lcm" && r.steps > n_train)
        throw InputError("steps (--steps) " + std::to_string(r.steps) + " is above " + std::to_string(n_train) +
                         ": the lcm sampler visits levels of the " + std::to_string(n_train) + " its UNet was distilled on (2 to 8 steps are typical)");
    return r;
}

void check_noise(const Noise& n, const char* name, const std::vector<float>& v, const I64& given, const I64& want) {
    std::size_t count = 1;
    for (auto d : want) count *= std::size_t(d);
    if (given.empty() ? v.size() != count : given != want)
        throw InputError(n.source + ": '" + name + "' is float32 " + (given.empty() ? "of " + std::to_string(v.size()) + " values" : shape_str(given)) +
                         ", this clip needs float32 " + shape_str(want) + "; write the noise for the same frames, height and width");
}

}  // namespace

Clip Runtime::generate(const ImageView& image, const GenerateOptions& o) const {
    const auto t_total = Clock::now();
    const auto& cfg = impl_->manifest.config;
    // Checks first: nothing runs before the inputs are known to be usable.
    if (!image.pixels || image.width < 2 || image.height < 2)
        throw InputError("the image is " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                         " pixels; each side needs at least 2 pixels (CLIP's antialiased resize reflects at the borders)");
    const Resolved r = resolve(o, cfg, impl_->manifest.sampler);
    const std::string decoder = o.decoder == "fast" ? "vae_decoder_fast" : "vae_decoder";
    if (!impl_->sessions.count(decoder))  // runtime/pipeline.py's words
        throw InputError("decoder='fast' needs a bundle with the distilled decoder (vae_decoder_fast), which this one lacks; "
                         "export it with `python -m export.onnx --model M --fast-decoder RUN --out BUNDLE`, or use --decoder full");
    const bool lcm = r.sampler.name == "lcm";
    const int step_draws = lcm ? r.steps - 1 : 0;  // the consistency sampler's fresh noise after each step but the last
    const int F = r.F, H = r.H, W = r.W, chunk = r.chunk;
    const int C = cfg.latent_channels, h = H / cfg.vae_scale_factor, w = W / cfg.vae_scale_factor;
    const std::size_t hw = std::size_t(h) * w, frame_size = std::size_t(C) * hw, video_size = F * frame_size;
    const I64 aug_shape{1, 3, H, W}, lat_shape{1, F, C, h, w};
    if (o.noise) {
        check_noise(*o.noise, "augmentation", o.noise->augmentation, o.noise->augmentation_shape, aug_shape);
        check_noise(*o.noise, "latents", o.noise->latents, o.noise->latents_shape, lat_shape);
        if (step_draws > 0) {
            I64 want{step_draws, 1, F, C, h, w}, given = o.noise->steps_shape;
            const bool ok = given.empty() ? o.noise->steps.size() >= std::size_t(step_draws) * video_size
                                          : (given.size() == 6 && given[0] >= step_draws && I64(given.begin() + 1, given.end()) == I64(want.begin() + 1, want.end()));
            if (!ok)
                throw InputError(o.noise->source + ": the lcm sampler needs 'steps' float32 " + shape_str(want) +
                                 " (one noise array per step but the last), got " + (o.noise->steps.empty() ? std::string("none") : shape_str(given)) +
                                 "; write the noise with --save-noise from a run with the same sampler, steps, frames, height and width");
        }
    }

    Clip clip;
    clip.frames = F, clip.height = H, clip.width = W;
    Timings& t = clip.timings;

    // 1. Preprocess: CLIP's view (an ONNX graph of the bundle, on the original image), the VAE's
    //    view (Pillow's Lanczos resize), the noise.
    auto t0 = Clock::now();
    const I64 pix_shape{image.height, image.width, 3};
    I64 pv_shape;
    std::vector<float> pixel_values = impl_->session("clip_preprocess").run({{"pixels", pix_shape, nullptr, image.pixels}}, &pv_shape);
    std::vector<float> vae_in;
    if (image.width == W && image.height == H) {
        vae_in = detail::vae_view(image.pixels, W, H);
    } else {
        auto resized = detail::resize_lanczos_rgb8(image.pixels, image.width, image.height, W, H);
        vae_in = detail::vae_view(resized.data(), W, H);
    }
    std::vector<float> eps_aug, eps_lat;
    if (o.noise) {
        eps_aug = o.noise->augmentation, eps_lat = o.noise->latents;
    } else {
        eps_aug = detail::normal_noise(o.seed, detail::NoiseStream::augmentation, vae_in.size());
        eps_lat = detail::normal_noise(o.seed, detail::NoiseStream::latents, video_size);
    }
    const float noise_aug = float(r.noise_aug);
    for (std::size_t i = 0; i < vae_in.size(); ++i) vae_in[i] = vae_in[i] + noise_aug * eps_aug[i];
    t.preprocess = since(t0);

    // 2. Conditioning: CLIP embedding and the (unscaled) latent of the augmented image.
    t0 = Clock::now();
    std::vector<float> embeds = impl_->session("image_encoder").run({{"pixel_values", pv_shape, pixel_values.data(), nullptr}});
    t.image_encoder = since(t0);
    t0 = Clock::now();
    std::vector<float> image_latent = impl_->session("vae_encoder").run({{"image", aug_shape, vae_in.data(), nullptr}});
    t.vae_encoder = since(t0);

    // 3. Denoise. Under guidance the batch is [uncond, cond]: uncond has zero embedding and latent.
    t0 = Clock::now();
    const bool cfg_on = r.max_guidance > 1.0;
    const int B = cfg_on ? 2 : 1;
    const int D = int(embeds.size());
    std::vector<float> hidden(std::size_t(B) * D, 0.0f);
    std::copy(embeds.begin(), embeds.end(), hidden.begin() + std::size_t(B - 1) * D);
    const float time_ids_one[3] = {float(r.fps - 1), float(r.motion_bucket_id), noise_aug};
    std::vector<float> time_ids;
    for (int b = 0; b < B; ++b) time_ids.insert(time_ids.end(), time_ids_one, time_ids_one + 3);
    const std::vector<float> weights = detail::guidance_weights(r.min_guidance, r.max_guidance, F);
    // Euler: Karras levels of model.config's range, time input c_noise(sigma). lcm: the consistency
    // schedule and its time inputs (sampling.hpp lcm_schedule), its own initial scale.
    const detail::LCMParams& lp = r.sampler.params;
    std::vector<float> sigmas, timesteps;
    if (lcm) {
        detail::lcm_schedule(r.steps, lp, sigmas, timesteps);
    } else {
        sigmas = detail::karras_sigmas(r.steps, cfg.sigma_min, cfg.sigma_max);
        for (int i = 0; i < r.steps; ++i) timesteps.push_back(detail::c_noise(sigmas[i]));
    }

    std::vector<float> x(video_size);
    const float s0 = lcm ? detail::lcm_initial_noise_scale(lp) : detail::initial_noise_scale(sigmas[0]);
    for (std::size_t i = 0; i < video_size; ++i) x[i] = eps_lat[i] * s0;
    std::vector<float> sample(std::size_t(B) * 2 * video_size);
    const float sd2 = lcm ? float(lp.sigma_data * lp.sigma_data) : 1.0f;
    for (int i = 0; i < r.steps; ++i) {
        const float sigma = sigmas[i];
        for (int b = 0; b < B; ++b) {
            const bool cond = b == B - 1;
            detail::unet_sample_scaled(x.data(), cond ? image_latent.data() : nullptr, sigma, sd2, F, C, hw, sample.data() + b * 2 * video_size);
        }
        std::vector<float> timestep(B, timesteps[i]);
        const auto t_unet = Clock::now();
        std::vector<float> out = impl_->session("unet").run({
            {"sample", {B, F, 2 * C, h, w}, sample.data(), nullptr},
            {"timestep", {B}, timestep.data(), nullptr},
            {"encoder_hidden_states", {B, 1, D}, hidden.data(), nullptr},
            {"added_time_ids", {B, 3}, time_ids.data(), nullptr},
        });
        t.unet += since(t_unet);
        ++t.unet_calls;
        float* guided = out.data() + (B - 1) * video_size;
        if (cfg_on) detail::apply_guidance(out.data(), guided, weights, frame_size);
        if (!lcm) {
            detail::euler_step(x.data(), guided, video_size, sigma, sigmas[i + 1]);
        } else if (i < step_draws) {
            std::vector<float> z = o.noise ? std::vector<float>(o.noise->steps.begin() + std::size_t(i) * video_size,
                                                                o.noise->steps.begin() + std::size_t(i + 1) * video_size)
                                           : detail::normal_noise(o.seed, detail::step_stream(i), video_size);
            detail::lcm_step(x.data(), guided, z.data(), video_size, sigma, sigmas[i + 1], lp);
        } else {
            detail::lcm_step(x.data(), guided, nullptr, video_size, sigma, sigmas[i + 1], lp);
        }
    }
    t.sampler = since(t0) - t.unet;  // the loop's own arithmetic, outside the UNet calls
    clip.latents = x;

    // 4. Decode in chunks of frames (the full or the fast decoder); latents divided by the VAE's scaling factor.
    t0 = Clock::now();
    const float inv = float(1.0 / cfg.scaling_factor);
    std::vector<float> z(video_size);
    for (std::size_t i = 0; i < video_size; ++i) z[i] = x[i] * inv;
    clip.rgb.resize(std::size_t(F) * H * W * 3);
    for (int f0 = 0; f0 < F; f0 += chunk) {
        const int n = std::min(chunk, F - f0);
        std::vector<float> px = impl_->session(decoder).run({{"latent", {n, C, h, w}, z.data() + f0 * frame_size, nullptr}});
        detail::to_uint8(px.data(), n, H, W, clip.rgb.data() + std::size_t(f0) * H * W * 3);
    }
    t.vae_decoder = since(t0);
    t.total = since(t_total);
    return clip;
}

}  // namespace sfv
