// The C API (include/sfv/sfv.h): opaque handles over detail::Engine, every exception turned into
// a status plus this thread's last-error message (the exception's own text), so nothing of C++
// (exceptions, std:: types) crosses the library's boundary.
#include "sfv/sfv.h"

#include <cstring>
#include <map>
#include <new>
#include <string>

#include <onnxruntime_cxx_api.h>

#include "engine.hpp"

struct sfv_runtime {
    sfv::detail::Engine engine;
    sfv_runtime(const std::string& dir, const sfv::RuntimeOptions& o) : engine(dir, o) {}
};
struct sfv_runtime_options {
    sfv::RuntimeOptions options;
};
struct sfv_options {
    sfv::GenerateOptions options;
    std::vector<std::int64_t> seeds;
    std::map<std::size_t, sfv::Noise> noise;  ///< per image index
    sfv_progress_fn progress = nullptr;
    void* user_data = nullptr;
};
struct sfv_result {
    sfv::detail::Batch batch;
};

namespace {

thread_local std::string last_error;

sfv_status fail(sfv_status status, const char* what) {
    try {
        last_error = what;
    } catch (...) {  // no memory for the message: keep the status
    }
    return status;
}

/// Runs f, mapping every exception to its status; the message becomes this thread's last error.
template <class F>
sfv_status guarded(F&& f) noexcept {
    try {
        f();
        return SFV_STATUS_OK;
    } catch (const sfv::Cancelled& e) {
        return fail(SFV_STATUS_CANCELLED, e.what());
    } catch (const sfv::BundleError& e) {
        return fail(SFV_STATUS_BUNDLE_ERROR, e.what());
    } catch (const sfv::InputError& e) {
        return fail(SFV_STATUS_INPUT_ERROR, e.what());
    } catch (const sfv::BackendError& e) {
        return fail(SFV_STATUS_BACKEND_ERROR, e.what());
    } catch (const Ort::Exception& e) {  // a failure inside ONNX Runtime not converted closer to it
        return fail(SFV_STATUS_BACKEND_ERROR, (std::string("ONNX Runtime: ") + e.what()).c_str());
    } catch (const std::bad_alloc&) {
        return fail(SFV_STATUS_OUT_OF_MEMORY, "out of memory; free memory, or generate fewer frames or images per call");
    } catch (const std::exception& e) {
        return fail(SFV_STATUS_INTERNAL_ERROR, e.what());
    } catch (...) {
        return fail(SFV_STATUS_INTERNAL_ERROR, "unknown exception inside sfv_runtime");
    }
}

void need(const void* p, const char* function, const char* argument) {
    if (!p) throw sfv::InputError(std::string(function) + ": " + argument + " is NULL; pass a valid pointer");
}

template <class T>
sfv_status create(T** out, const char* function) {
    return guarded([&] {
        need(out, function, "out");
        *out = nullptr;
        *out = new T();
    });
}

}  // namespace

extern "C" {

SFV_API const char* sfv_version(void) {
#define SFV_STR2(x) #x
#define SFV_STR(x) SFV_STR2(x)
    return SFV_STR(SFV_VERSION_MAJOR) "." SFV_STR(SFV_VERSION_MINOR) "." SFV_STR(SFV_VERSION_PATCH);
}

SFV_API const char* sfv_last_error(void) { return last_error.c_str(); }

SFV_API const char* sfv_status_name(sfv_status status) {
    switch (status) {
        case SFV_STATUS_OK: return "SFV_STATUS_OK";
        case SFV_STATUS_BUNDLE_ERROR: return "SFV_STATUS_BUNDLE_ERROR";
        case SFV_STATUS_INPUT_ERROR: return "SFV_STATUS_INPUT_ERROR";
        case SFV_STATUS_BACKEND_ERROR: return "SFV_STATUS_BACKEND_ERROR";
        case SFV_STATUS_CANCELLED: return "SFV_STATUS_CANCELLED";
        case SFV_STATUS_OUT_OF_MEMORY: return "SFV_STATUS_OUT_OF_MEMORY";
        case SFV_STATUS_INTERNAL_ERROR: return "SFV_STATUS_INTERNAL_ERROR";
    }
    return "SFV_STATUS_UNKNOWN";
}

// ---- runtime options

SFV_API sfv_status sfv_runtime_options_create(sfv_runtime_options** out) { return create(out, "sfv_runtime_options_create"); }
SFV_API void sfv_runtime_options_destroy(sfv_runtime_options* options) { delete options; }

SFV_API sfv_status sfv_runtime_options_set_provider(sfv_runtime_options* o, sfv_provider provider, int32_t device_id) {
    return guarded([&] {
        need(o, "sfv_runtime_options_set_provider", "options");
        if (provider != SFV_PROVIDER_CPU && provider != SFV_PROVIDER_CUDA && provider != SFV_PROVIDER_TENSORRT)
            throw sfv::InputError("provider " + std::to_string(int(provider)) + " is unknown; use SFV_PROVIDER_CPU, _CUDA or _TENSORRT");
        if (device_id < 0) throw sfv::InputError("device_id must be >= 0, got " + std::to_string(device_id));
        o->options.provider = sfv::Provider(provider);
        o->options.device_id = device_id;
    });
}

SFV_API sfv_status sfv_runtime_options_set_threads(sfv_runtime_options* o, int32_t threads) {
    return guarded([&] {
        need(o, "sfv_runtime_options_set_threads", "options");
        if (threads < 0) throw sfv::InputError("threads must be >= 0 (0: ONNX Runtime's choice), got " + std::to_string(threads));
        o->options.threads = threads;
    });
}

SFV_API sfv_status sfv_runtime_options_set_precision(sfv_runtime_options* o, const char* precision) {
    return guarded([&] {
        need(o, "sfv_runtime_options_set_precision", "options");
        need(precision, "sfv_runtime_options_set_precision", "precision");
        o->options.precision = precision;  // checked by sfv_runtime_open, in the C++ runtime's words
    });
}

SFV_API sfv_status sfv_runtime_options_set_verify_checksums(sfv_runtime_options* o, int verify) {
    return guarded([&] {
        need(o, "sfv_runtime_options_set_verify_checksums", "options");
        o->options.verify_checksums = verify != 0;
    });
}

SFV_API sfv_status sfv_runtime_options_set_trt_cache_dir(sfv_runtime_options* o, const char* dir) {
    return guarded([&] {
        need(o, "sfv_runtime_options_set_trt_cache_dir", "options");
        need(dir, "sfv_runtime_options_set_trt_cache_dir", "dir");
        o->options.trt_cache_dir = dir;
    });
}

// ---- runtime

SFV_API sfv_status sfv_runtime_open(const char* bundle_dir, const sfv_runtime_options* options, sfv_runtime** out) {
    return guarded([&] {
        need(out, "sfv_runtime_open", "out");
        *out = nullptr;
        need(bundle_dir, "sfv_runtime_open", "bundle_dir");
        *out = new sfv_runtime(bundle_dir, options ? options->options : sfv::RuntimeOptions{});
    });
}

SFV_API void sfv_runtime_close(sfv_runtime* runtime) { delete runtime; }

SFV_API sfv_status sfv_runtime_model(const sfv_runtime* rt, sfv_model_info* out) {
    return guarded([&] {
        need(rt, "sfv_runtime_model", "runtime");
        need(out, "sfv_runtime_model", "out");
        const sfv::ModelInfo& m = rt->engine.model();
        *out = {m.num_frames, m.default_height, m.default_width, m.latent_channels, m.vae_scale_factor, m.pixel_multiple,
                m.fast_decoder ? 1 : 0, m.sampler.c_str()};
    });
}

SFV_API const char* sfv_runtime_fp32_fallback(const sfv_runtime* rt, size_t i) {
    if (!rt) return nullptr;
    const auto& names = rt->engine.model().fp32_fallback;
    return i < names.size() ? names[i].c_str() : nullptr;
}

// ---- generation options

SFV_API sfv_status sfv_options_create(sfv_options** out) { return create(out, "sfv_options_create"); }
SFV_API void sfv_options_destroy(sfv_options* options) { delete options; }

#define SFV_SETTER(fn, type, field)                      \
    SFV_API sfv_status fn(sfv_options* o, type value) {  \
        return guarded([&] {                             \
            need(o, #fn, "options");                     \
            o->options.field = value;                    \
        });                                              \
    }
// Values are checked by sfv_generate, with the model's defaults and in the Python runtime's words.
SFV_SETTER(sfv_options_set_num_frames, int32_t, num_frames)
SFV_SETTER(sfv_options_set_steps, int32_t, steps)
SFV_SETTER(sfv_options_set_min_guidance, double, min_guidance)
SFV_SETTER(sfv_options_set_max_guidance, double, max_guidance)
SFV_SETTER(sfv_options_set_fps, int32_t, fps)
SFV_SETTER(sfv_options_set_motion_bucket_id, int32_t, motion_bucket_id)
SFV_SETTER(sfv_options_set_noise_aug_strength, double, noise_aug_strength)
SFV_SETTER(sfv_options_set_decode_chunk_size, int32_t, decode_chunk_size)
SFV_SETTER(sfv_options_set_seed, int64_t, seed)
#undef SFV_SETTER

SFV_API sfv_status sfv_options_set_size(sfv_options* o, int32_t height, int32_t width) {
    return guarded([&] {
        need(o, "sfv_options_set_size", "options");
        o->options.height.reset(), o->options.width.reset();
        if (height) o->options.height = height;
        if (width) o->options.width = width;
    });
}

SFV_API sfv_status sfv_options_set_sampler(sfv_options* o, const char* sampler) {
    return guarded([&] {
        need(o, "sfv_options_set_sampler", "options");
        if (sampler) o->options.sampler = sampler;
        else o->options.sampler.reset();  // NULL: the bundle's
    });
}

SFV_API sfv_status sfv_options_set_decoder(sfv_options* o, const char* decoder) {
    return guarded([&] {
        need(o, "sfv_options_set_decoder", "options");
        need(decoder, "sfv_options_set_decoder", "decoder");
        o->options.decoder = decoder;
    });
}

SFV_API sfv_status sfv_options_set_seeds(sfv_options* o, const int64_t* seeds, size_t count) {
    return guarded([&] {
        need(o, "sfv_options_set_seeds", "options");
        if (count) need(seeds, "sfv_options_set_seeds", "seeds");
        o->seeds.assign(seeds, seeds + count);
    });
}

SFV_API sfv_status sfv_options_set_noise(sfv_options* o, size_t index, const char* name, const float* data, size_t count,
                                         const int64_t* shape, size_t ndim, const char* source) {
    return guarded([&] {
        need(o, "sfv_options_set_noise", "options");
        need(name, "sfv_options_set_noise", "name");
        if (count) need(data, "sfv_options_set_noise", "data");
        if (ndim) need(shape, "sfv_options_set_noise", "shape");
        sfv::Noise& n = o->noise[index];
        std::vector<float>* values = nullptr;
        std::vector<std::int64_t>* dims = nullptr;
        const std::string key = name;
        if (key == "augmentation") values = &n.augmentation, dims = &n.augmentation_shape;
        else if (key == "latents") values = &n.latents, dims = &n.latents_shape;
        else if (key == "steps") values = &n.steps, dims = &n.steps_shape;
        else throw sfv::InputError("noise array '" + key + "' is unknown; name one of augmentation, latents, steps");
        values->assign(data, data + count);
        if (shape) dims->assign(shape, shape + ndim);
        else dims->clear();
        if (source) n.source = source;
    });
}

SFV_API sfv_status sfv_options_set_progress(sfv_options* o, sfv_progress_fn callback, void* user_data) {
    return guarded([&] {
        need(o, "sfv_options_set_progress", "options");
        o->progress = callback;
        o->user_data = user_data;
    });
}

// ---- generation

SFV_API sfv_status sfv_generate(const sfv_runtime* rt, const sfv_image* images, size_t count, const sfv_options* options,
                                sfv_result** out) {
    return guarded([&] {
        need(out, "sfv_generate", "out");
        *out = nullptr;
        need(rt, "sfv_generate", "runtime");
        if (count) need(images, "sfv_generate", "images");
        sfv::detail::Request req;
        for (size_t i = 0; i < count; ++i) req.images.push_back({images[i].pixels, images[i].width, images[i].height});
        if (options) {
            req.options = options->options;
            req.seeds = options->seeds;
            for (const auto& [i, noise] : options->noise) {
                if (i >= count)
                    throw sfv::InputError("explicit noise is set for image " + std::to_string(i) + " but the call has " + std::to_string(count) +
                                          " images; set noise only for the images given");
                if (req.noise.size() <= i) req.noise.resize(i + 1, nullptr);
                req.noise[i] = &noise;
            }
            req.progress = options->progress;
            req.user_data = options->user_data;
        }
        auto* result = new sfv_result{rt->engine.generate(req)};
        *out = result;
    });
}

SFV_API size_t sfv_result_count(const sfv_result* r) { return r ? r->batch.clips.size() : 0; }

SFV_API sfv_status sfv_result_clip(const sfv_result* r, size_t index, sfv_clip* out) {
    return guarded([&] {
        need(r, "sfv_result_clip", "result");
        need(out, "sfv_result_clip", "out");
        if (index >= r->batch.clips.size())
            throw sfv::InputError("clip " + std::to_string(index) + " asked of a result with " + std::to_string(r->batch.clips.size()) +
                                  "; index from 0 to sfv_result_count() - 1");
        const sfv::Clip& c = r->batch.clips[index];
        *out = {c.frames, c.height, c.width, c.rgb.data(), c.rgb.size(), c.latents.data(), c.latents.size()};
    });
}

SFV_API sfv_status sfv_result_timings(const sfv_result* r, sfv_timings* out) {
    return guarded([&] {
        need(r, "sfv_result_timings", "result");
        need(out, "sfv_result_timings", "out");
        const sfv::Timings& t = r->batch.timings;
        *out = {t.preprocess, t.image_encoder, t.vae_encoder, t.unet, t.sampler, t.vae_decoder, t.total, t.unet_calls};
    });
}

SFV_API void sfv_result_destroy(sfv_result* r) { delete r; }

}  // extern "C"
