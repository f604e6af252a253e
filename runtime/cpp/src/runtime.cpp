// sfv::detail::Engine: orchestrates the bundle's five networks with the sampler of sampling.hpp.
// The stage order and every formula follow runtime/pipeline.py; see sampling.hpp.
#include "engine.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <functional>
#include <numeric>
#include <thread>

#include "noise.hpp"
#include "resample.hpp"
#include "sampling.hpp"
#include "session.hpp"

namespace sfv::detail {

using I64 = std::vector<std::int64_t>;

Engine::Engine(const std::string& bundle_dir, const RuntimeOptions& options) {
    manifest_ = load_manifest(bundle_dir, options.precision);
    const auto& c = manifest_.config;
    info_.num_frames = c.num_frames, info_.default_height = c.default_height, info_.default_width = c.default_width;
    info_.latent_channels = c.latent_channels, info_.vae_scale_factor = c.vae_scale_factor, info_.pixel_multiple = c.pixel_multiple();
    info_.sampler = manifest_.sampler.name;
    for (const auto& n : manifest_.networks) {
        if (n.name == "vae_decoder_fast") info_.fast_decoder = true;
        if (n.name != "clip_preprocess" && n.precision != options.precision) info_.fp32_fallback.push_back(n.name);
    }
    RuntimeOptions cpu = options;
    cpu.provider = Provider::cpu;  // the pre-processing graph is tiny: always on the CPU, as in Python
    RuntimeOptions gpu = options;
    if (gpu.trt_cache_dir.empty()) gpu.trt_cache_dir = bundle_dir + "/trt_cache";
    // Start-up: the graphs' sha256 and the sessions are computed by a few worker threads (hashing a
    // graph and loading and optimising it are each mostly one thread), as many as the machine has
    // cores, biggest graph first: opening takes about the UNet's session time instead of the sum.
    // A checksum mismatch is reported before any load error, in network order, so a corrupt graph
    // is named as such.
    const auto& nets = manifest_.networks;
    const std::size_t n = nets.size();
    std::vector<std::unique_ptr<Session>> made(n);
    std::vector<std::exception_ptr> hash_errors(n), load_errors(n);
    std::vector<std::size_t> by_size(n);
    std::iota(by_size.begin(), by_size.end(), std::size_t(0));
    std::vector<long long> bytes(n);
    for (std::size_t i = 0; i < n; ++i) {
        struct stat st;
        bytes[i] = ::stat(nets[i].file.c_str(), &st) == 0 ? (long long)st.st_size : 0;
    }
    std::stable_sort(by_size.begin(), by_size.end(), [&](std::size_t a, std::size_t b) { return bytes[a] > bytes[b]; });
    std::vector<std::function<void()>> tasks;  // the biggest graph's session and hash first, then the others'
    for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = by_size[k];
        tasks.emplace_back([&, i] {
            try {
                made[i] = std::make_unique<Session>(nets[i], nets[i].name == "clip_preprocess" ? cpu : gpu);
            } catch (...) {
                load_errors[i] = std::current_exception();
            }
        });
        if (options.verify_checksums)
            tasks.emplace_back([&, i] {
                try {
                    verify_checksum(nets[i]);
                } catch (...) {
                    hash_errors[i] = std::current_exception();
                }
            });
    }
    std::atomic<std::size_t> next{0};
    const std::size_t workers = std::min<std::size_t>(std::max(1u, std::thread::hardware_concurrency()), tasks.size());
    std::vector<std::thread> threads;
    for (std::size_t w = 0; w < workers; ++w)
        threads.emplace_back([&] {
            for (std::size_t t; (t = next++) < tasks.size();) tasks[t]();
        });
    for (auto& t : threads) t.join();
    for (const auto* errors : {&hash_errors, &load_errors})
        for (const auto& e : *errors)
            if (e) std::rethrow_exception(e);
    for (std::size_t i = 0; i < n; ++i) sessions_[nets[i].name] = std::move(made[i]);
}

Engine::~Engine() = default;

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
    SamplerConfig sampler;
};

/// The sampler a call runs (runtime/options.py chosen_sampler): the bundle's, or another's built-in defaults.
SamplerConfig chosen_sampler(const std::optional<std::string>& name, const SamplerConfig& bundle) {
    if (name && *name != "euler" && *name != "lcm") throw InputError("sampler (--sampler) must be one of euler, lcm, got '" + *name + "'");
    if (!name || *name == bundle.name) return bundle;
    return SamplerConfig::builtin(*name);
}

Resolved resolve(const GenerateOptions& o, const ModelConfig& c, const SamplerConfig& bundle_sampler) {
    const SamplerConfig s = chosen_sampler(o.sampler, bundle_sampler);
    Resolved r{o.num_frames.value_or(c.num_frames), o.height.value_or(c.default_height), o.width.value_or(c.default_width),
               o.steps.value_or(s.steps.value_or(c.steps)), o.fps.value_or(c.fps), o.motion_bucket_id.value_or(c.motion_bucket_id), 0,
               o.min_guidance.value_or(s.min_guidance.value_or(c.min_guidance)), o.max_guidance.value_or(s.max_guidance.value_or(c.max_guidance)),
               o.noise_aug_strength.value_or(c.noise_aug_strength), s};
    r.chunk = o.decode_chunk_size.value_or(r.F);
    const std::pair<const char*, int> ints[] = {{"num_frames (--frames)", r.F}, {"steps (--steps)", r.steps},
                                                {"decode_chunk_size (--decode-chunk)", r.chunk}, {"fps (--fps)", r.fps}};
    for (const auto& [label, value] : ints)
        if (value < 1) throw InputError(std::string(label) + " must be a positive integer, got " + std::to_string(value));
    check_resolution(c, r.H, r.W);
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

/// Calls the progress callback; Cancelled when it returns non-zero.
struct Progress {
    sfv_progress_fn fn;
    void* user;
    void operator()(const char* stage, int step, int total, float sigma = 0, const float* latents = nullptr, const I64& shape = {}) const {
        if (!fn) return;
        sfv_progress e{stage, step, total, sigma, latents, {0, 0, 0, 0, 0}};
        for (std::size_t k = 0; k < shape.size() && k < 5; ++k) e.latents_shape[k] = shape[k];
        if (fn(&e, user) != 0)
            throw Cancelled("cancelled by the progress callback at " + std::string(stage) + " step " + std::to_string(step) + " of " +
                            std::to_string(total) + "; no clip was made");
    }
};

}  // namespace

Batch Engine::generate(const Request& req) const {
    const auto t_total = Clock::now();
    const auto& cfg = manifest_.config;
    const GenerateOptions& o = req.options;
    const std::size_t N = req.images.size();
    // Checks first: nothing runs before the inputs are known to be usable.
    if (N == 0) throw InputError("no image given; pass at least one image");
    if (!req.seeds.empty() && req.seeds.size() != N)
        throw InputError("seeds: " + std::to_string(req.seeds.size()) + " given for " + std::to_string(N) + " images; give one seed per image");
    if (req.noise.size() > N)
        throw InputError("explicit noise given for " + std::to_string(req.noise.size()) + " images, the call has " + std::to_string(N) +
                         "; give noise per image of the call");
    for (const ImageView& image : req.images)
        if (!image.pixels || image.width < 2 || image.height < 2)
            throw InputError("the image is " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                             " pixels; each side needs at least 2 pixels (CLIP's antialiased resize reflects at the borders)");
    const Resolved r = resolve(o, cfg, manifest_.sampler);
    std::vector<std::int64_t> seeds = req.seeds;
    for (std::size_t i = seeds.size(); i < N; ++i) seeds.push_back(o.seed + std::int64_t(i));
    for (auto seed : seeds)
        if (seed < 0) throw InputError("seed (--seed) must be a non-negative integer, got " + std::to_string(seed));
    const std::string decoder = o.decoder == "fast" ? "vae_decoder_fast" : "vae_decoder";
    if (!sessions_.count(decoder))  // runtime/pipeline.py's words
        throw InputError("decoder='fast' needs a bundle with the distilled decoder (vae_decoder_fast), which this one lacks; "
                         "export it with `python -m export.onnx --model M --fast-decoder RUN --out BUNDLE`, or use --decoder full");
    const bool lcm = r.sampler.name == "lcm";
    const int step_draws = lcm ? r.steps - 1 : 0;  // the consistency sampler's fresh noise after each step but the last
    const int F = r.F, H = r.H, W = r.W, chunk = r.chunk;
    const int C = cfg.latent_channels, h = H / cfg.vae_scale_factor, w = W / cfg.vae_scale_factor;
    const std::size_t hw = std::size_t(h) * w, frame_size = std::size_t(C) * hw, video_size = F * frame_size;
    const I64 aug_shape{1, 3, H, W}, lat_shape{1, F, C, h, w};
    auto noise_of = [&](std::size_t i) -> const Noise* { return i < req.noise.size() ? req.noise[i] : nullptr; };
    for (std::size_t i = 0; i < N; ++i) {
        const Noise* nz = noise_of(i);
        if (!nz) continue;
        check_noise(*nz, "augmentation", nz->augmentation, nz->augmentation_shape, aug_shape);
        check_noise(*nz, "latents", nz->latents, nz->latents_shape, lat_shape);
        if (step_draws > 0) {
            I64 want{step_draws, 1, F, C, h, w}, given = nz->steps_shape;
            const bool ok = given.empty() ? nz->steps.size() >= std::size_t(step_draws) * video_size
                                          : (given.size() == 6 && given[0] >= step_draws && I64(given.begin() + 1, given.end()) == I64(want.begin() + 1, want.end()));
            if (!ok)
                throw InputError(nz->source + ": the lcm sampler needs 'steps' float32 " + shape_str(want) +
                                 " (one noise array per step but the last), got " + (nz->steps.empty() ? std::string("none") : shape_str(given)) +
                                 "; write the noise with --save-noise from a run with the same sampler, steps, frames, height and width");
        }
    }
    const Progress progress{req.progress, req.user_data};

    Batch out;
    out.clips.resize(N);
    Timings& t = out.timings;
    const int n = int(N);

    // 1. Preprocess: CLIP's view (an ONNX graph of the bundle, on the original image), the VAE's
    //    view (Pillow's Lanczos resize) plus its augmentation noise, the initial noise.
    auto t0 = Clock::now();
    std::vector<std::vector<float>> pixel_values(N), vae_in(N), eps_lat(N);
    std::vector<I64> pv_shape(N);
    const float noise_aug = float(r.noise_aug);
    for (std::size_t i = 0; i < N; ++i) {
        const ImageView& image = req.images[i];
        const I64 pix_shape{image.height, image.width, 3};
        pixel_values[i] = session("clip_preprocess").run({{"pixels", pix_shape, nullptr, image.pixels}}, &pv_shape[i]);
        if (image.width == W && image.height == H) {
            vae_in[i] = vae_view(image.pixels, W, H);
        } else {
            auto resized = resize_lanczos_rgb8(image.pixels, image.width, image.height, W, H);
            vae_in[i] = vae_view(resized.data(), W, H);
        }
        const Noise* nz = noise_of(i);
        const std::vector<float> eps_aug = nz ? nz->augmentation : normal_noise(seeds[i], NoiseStream::augmentation, vae_in[i].size());
        eps_lat[i] = nz ? nz->latents : normal_noise(seeds[i], NoiseStream::latents, video_size);
        for (std::size_t k = 0; k < vae_in[i].size(); ++k) vae_in[i][k] = vae_in[i][k] + noise_aug * eps_aug[k];
        progress("preprocess", int(i) + 1, n);
    }
    t.preprocess = since(t0);

    // 2. Conditioning: CLIP embedding and the (unscaled) latent of the augmented image.
    t0 = Clock::now();
    std::vector<std::vector<float>> embeds(N), image_latent(N);
    for (std::size_t i = 0; i < N; ++i) {
        embeds[i] = session("image_encoder").run({{"pixel_values", pv_shape[i], pixel_values[i].data(), nullptr}});
        progress("image_encoder", int(i) + 1, n);
    }
    t.image_encoder = since(t0);
    t0 = Clock::now();
    for (std::size_t i = 0; i < N; ++i) {
        image_latent[i] = session("vae_encoder").run({{"image", aug_shape, vae_in[i].data(), nullptr}});
        progress("vae_encoder", int(i) + 1, n);
    }
    t.vae_encoder = since(t0);

    // 3. Denoise all images in one UNet batch. Under guidance each image is a pair [uncond, cond]:
    //    uncond has zero embedding and latent. Batch row of image i, member g: i * G + g.
    t0 = Clock::now();
    const bool cfg_on = r.max_guidance > 1.0;
    const int G = cfg_on ? 2 : 1;
    const int B = n * G;
    const int D = int(embeds[0].size());
    std::vector<float> hidden(std::size_t(B) * D, 0.0f), time_ids;
    const float time_ids_one[3] = {float(r.fps - 1), float(r.motion_bucket_id), noise_aug};
    for (int i = 0; i < n; ++i) std::copy(embeds[i].begin(), embeds[i].end(), hidden.begin() + std::size_t(i * G + G - 1) * D);
    for (int b = 0; b < B; ++b) time_ids.insert(time_ids.end(), time_ids_one, time_ids_one + 3);
    const std::vector<float> weights = guidance_weights(r.min_guidance, r.max_guidance, F);
    // Euler: Karras levels of model.config's range, time input c_noise(sigma). lcm: the consistency
    // schedule and its time inputs (sampling.hpp lcm_schedule), its own initial scale.
    const LCMParams& lp = r.sampler.params;
    std::vector<float> sigmas, timesteps;
    if (lcm) {
        lcm_schedule(r.steps, lp, sigmas, timesteps);
    } else {
        sigmas = karras_sigmas(r.steps, cfg.sigma_min, cfg.sigma_max);
        for (int i = 0; i < r.steps; ++i) timesteps.push_back(c_noise(sigmas[i]));
    }

    // x: the batch's latents [n, F, C, h, w]; sample and model_out: the UNet's input and output
    // buffers, allocated once per call and reused by every step (no allocation per UNet call).
    std::vector<float> x(N * video_size);
    const float s0 = lcm ? lcm_initial_noise_scale(lp) : initial_noise_scale(sigmas[0]);
    for (std::size_t i = 0; i < N; ++i)
        for (std::size_t k = 0; k < video_size; ++k) x[i * video_size + k] = eps_lat[i][k] * s0;
    std::vector<float> sample(std::size_t(B) * 2 * video_size), model_out(std::size_t(B) * video_size), timestep(B), z;
    const I64 sample_shape{B, F, 2 * C, h, w}, out_shape{B, F, C, h, w}, x_shape{n, F, C, h, w};
    const float sd2 = lcm ? float(lp.sigma_data * lp.sigma_data) : 1.0f;
    for (int s = 0; s < r.steps; ++s) {
        const float sigma = sigmas[s];
        for (int b = 0; b < B; ++b) {
            const int i = b / G;
            const bool cond = b % G == G - 1;
            unet_sample_scaled(x.data() + i * video_size, cond ? image_latent[i].data() : nullptr, sigma, sd2, F, C, hw,
                               sample.data() + std::size_t(b) * 2 * video_size);
        }
        std::fill(timestep.begin(), timestep.end(), timesteps[s]);
        const auto t_unet = Clock::now();
        session("unet").run_into({
            {"sample", sample_shape, sample.data(), nullptr},
            {"timestep", {B}, timestep.data(), nullptr},
            {"encoder_hidden_states", {B, 1, D}, hidden.data(), nullptr},
            {"added_time_ids", {B, 3}, time_ids.data(), nullptr},
        }, model_out.data(), out_shape);
        t.unet += since(t_unet);
        ++t.unet_calls;
        for (int i = 0; i < n; ++i) {
            float* xi = x.data() + i * video_size;
            float* guided = model_out.data() + std::size_t(i * G + G - 1) * video_size;
            if (cfg_on) apply_guidance(model_out.data() + std::size_t(i * G) * video_size, guided, weights, frame_size);
            if (!lcm) {
                euler_step(xi, guided, video_size, sigma, sigmas[s + 1]);
            } else if (s < step_draws) {
                const Noise* nz = noise_of(i);
                if (nz) z.assign(nz->steps.begin() + std::size_t(s) * video_size, nz->steps.begin() + std::size_t(s + 1) * video_size);
                else z = normal_noise(seeds[i], step_stream(s), video_size);
                lcm_step(xi, guided, z.data(), video_size, sigma, sigmas[s + 1], lp);
            } else {
                lcm_step(xi, guided, nullptr, video_size, sigma, sigmas[s + 1], lp);
            }
        }
        progress("unet", s + 1, r.steps, sigma, x.data(), x_shape);
    }
    t.sampler = since(t0) - t.unet;  // the loop's own arithmetic, outside the UNet calls

    // 4. Decode in chunks of frames (the full or the fast decoder); latents divided by the VAE's scaling factor.
    t0 = Clock::now();
    const float inv = float(1.0 / cfg.scaling_factor);
    std::vector<float> zl(video_size);
    const int chunks = (F + chunk - 1) / chunk;
    for (std::size_t i = 0; i < N; ++i) {
        Clip& clip = out.clips[i];
        clip.frames = F, clip.height = H, clip.width = W;
        clip.latents.assign(x.begin() + i * video_size, x.begin() + (i + 1) * video_size);
        for (std::size_t k = 0; k < video_size; ++k) zl[k] = clip.latents[k] * inv;
        clip.rgb.resize(std::size_t(F) * H * W * 3);
        for (int f0 = 0; f0 < F; f0 += chunk) {
            const int m = std::min(chunk, F - f0);
            std::vector<float> px = session(decoder).run({{"latent", {m, C, h, w}, zl.data() + f0 * frame_size, nullptr}});
            to_uint8(px.data(), m, H, W, clip.rgb.data() + std::size_t(f0) * H * W * 3);
            progress("vae_decoder", int(i) * chunks + f0 / chunk + 1, n * chunks);
        }
    }
    t.vae_decoder = since(t0);
    t.total = since(t_total);
    return out;
}

}  // namespace sfv::detail
