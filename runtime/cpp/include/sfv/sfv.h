/* sfv.h: the C API of sfv_runtime, which runs an exported sfv-deploy bundle (Stable Video
 * Diffusion / SF-V) with ONNX Runtime. C11 and C++; every function has C linkage.
 *
 *   sfv_runtime *rt = NULL;
 *   if (sfv_runtime_open("bundle/", NULL, &rt) != SFV_STATUS_OK) { fprintf(stderr, "%s\n", sfv_last_error()); ... }
 *   sfv_options *o = NULL;  sfv_options_create(&o);
 *   sfv_options_set_steps(o, 1);  sfv_options_set_max_guidance(o, 1.0);   // SF-V's one step
 *   sfv_image img = {pixels, width, height};                               // RGB8 [height, width, 3]
 *   sfv_result *r = NULL;
 *   sfv_status s = sfv_generate(rt, &img, 1, o, &r);                        // one clip per image
 *   sfv_clip c;  sfv_result_clip(r, 0, &c);                                 // c.rgb: [frames, height, width, 3]
 *   sfv_result_destroy(r);  sfv_options_destroy(o);  sfv_runtime_close(rt);
 *
 * Handles are opaque and owned by the caller, who destroys each with its *_destroy / *_close
 * (NULL is accepted and ignored). A function returns SFV_STATUS_OK or an error status; after an
 * error, sfv_last_error() gives a one-line message naming the problem and the fix, kept per thread
 * until that thread's next failing call.
 *
 * Threads: one opened sfv_runtime may be used by several threads at once (sfv_generate keeps its
 * state per call; ONNX Runtime sessions allow concurrent runs). An sfv_options or sfv_result is not
 * shared between threads while one of them changes it.
 */
#ifndef SFV_SFV_H
#define SFV_SFV_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define SFV_API __declspec(dllimport)
#elif defined(__GNUC__)
#define SFV_API __attribute__((visibility("default")))
#else
#define SFV_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version; SFV_VERSION_MAJOR is its SOVERSION (a change of it breaks the ABI). */
#define SFV_VERSION_MAJOR 1
#define SFV_VERSION_MINOR 0
#define SFV_VERSION_PATCH 0

typedef enum sfv_status {
    SFV_STATUS_OK = 0,
    SFV_STATUS_BUNDLE_ERROR = 1,  /* the bundle or its manifest is missing, of another version, or corrupt */
    SFV_STATUS_INPUT_ERROR = 2,   /* an option or input (size, frame count, noise, argument) is out of range */
    SFV_STATUS_BACKEND_ERROR = 3, /* ONNX Runtime failed (provider, precision, out of memory in a run, ...) */
    SFV_STATUS_CANCELLED = 4,     /* the progress callback asked to stop; no result was made */
    SFV_STATUS_OUT_OF_MEMORY = 5, /* the host ran out of memory */
    SFV_STATUS_INTERNAL_ERROR = 6 /* a bug: please report it with sfv_last_error()'s text */
} sfv_status;

typedef enum sfv_provider { SFV_PROVIDER_CPU = 0, SFV_PROVIDER_CUDA = 1, SFV_PROVIDER_TENSORRT = 2 } sfv_provider;

typedef struct sfv_runtime sfv_runtime;                 /* an opened bundle: one session per network */
typedef struct sfv_runtime_options sfv_runtime_options; /* how a bundle is opened */
typedef struct sfv_options sfv_options;                 /* how clips are generated */
typedef struct sfv_result sfv_result;                   /* the clips of one sfv_generate call */

/* Tightly packed RGB8 pixels, row-major [height, width, 3]; not owned. */
typedef struct sfv_image {
    const uint8_t *pixels;
    int32_t width;
    int32_t height;
} sfv_image;

/* One progress event. stage: "preprocess", "image_encoder", "vae_encoder", "unet" or
 * "vae_decoder" (the Python runtime's stage names); step is 1-based within the stage, of total.
 * For "unet": sigma is the step's noise level and latents the whole batch after the step,
 * float32 [batch, frames, channels, height / 8, width / 8] (latents_shape); both are 0 / NULL for
 * the other stages. Pointers are valid during the callback only. */
typedef struct sfv_progress {
    const char *stage;
    int32_t step;
    int32_t total;
    float sigma;
    const float *latents;
    int64_t latents_shape[5];
} sfv_progress;

/* Called from the generating thread; a non-zero return cancels the call, which then returns
 * SFV_STATUS_CANCELLED and makes no result. */
typedef int (*sfv_progress_fn)(const sfv_progress *event, void *user_data);

/* What the bundle's model expects (manifest.json's model.config). */
typedef struct sfv_model_info {
    int32_t num_frames, default_height, default_width;
    int32_t latent_channels, vae_scale_factor, pixel_multiple;
    int32_t fast_decoder; /* 1: the bundle has vae_decoder_fast (sfv_options_set_decoder "fast") */
    const char *sampler;  /* the bundle's default sampler, "euler" or "lcm"; owned by the runtime */
} sfv_model_info;

/* Wall-clock seconds per stage of one sfv_generate call, all images together (the Python
 * runtime's stages; sampler = the denoising loop's own arithmetic outside the UNet calls). */
typedef struct sfv_timings {
    double preprocess, image_encoder, vae_encoder, unet, sampler, vae_decoder, total;
    int32_t unet_calls;
} sfv_timings;

/* One clip of a result; the pointers are owned by the result. */
typedef struct sfv_clip {
    int32_t frames, height, width;
    const uint8_t *rgb;    /* [frames, height, width, 3] */
    size_t rgb_size;       /* bytes */
    const float *latents;  /* final latents [1, frames, latent_channels, height / 8, width / 8] */
    size_t latents_count;  /* floats */
} sfv_clip;

/* ---- library */
SFV_API const char *sfv_version(void);                  /* "MAJOR.MINOR.PATCH" */
SFV_API const char *sfv_last_error(void);               /* this thread's last error message ("" if none) */
SFV_API const char *sfv_status_name(sfv_status status); /* e.g. "SFV_STATUS_CANCELLED" */

/* ---- opening a bundle */
SFV_API sfv_status sfv_runtime_options_create(sfv_runtime_options **out);
SFV_API void sfv_runtime_options_destroy(sfv_runtime_options *options);
/* tensorrt: TensorRT, then CUDA for the nodes it leaves, then the CPU; needs an ONNX Runtime built with them. */
SFV_API sfv_status sfv_runtime_options_set_provider(sfv_runtime_options *options, sfv_provider provider, int32_t device_id);
SFV_API sfv_status sfv_runtime_options_set_threads(sfv_runtime_options *options, int32_t threads); /* 0: ONNX Runtime's choice */
/* fp32 | fp16 | int8 | fp8: the graph variant; fp32 for the networks whose variant the bundle lacks. */
SFV_API sfv_status sfv_runtime_options_set_precision(sfv_runtime_options *options, const char *precision);
SFV_API sfv_status sfv_runtime_options_set_verify_checksums(sfv_runtime_options *options, int verify);
/* TensorRT's engine cache (built engines kept across starts); default BUNDLE/trt_cache. */
SFV_API sfv_status sfv_runtime_options_set_trt_cache_dir(sfv_runtime_options *options, const char *dir);

/* Reads and checks the manifest and the graphs' sha256, opens one session per network.
 * options may be NULL (CPU, fp32, checksums verified). */
SFV_API sfv_status sfv_runtime_open(const char *bundle_dir, const sfv_runtime_options *options, sfv_runtime **out);
SFV_API void sfv_runtime_close(sfv_runtime *runtime);
SFV_API sfv_status sfv_runtime_model(const sfv_runtime *runtime, sfv_model_info *out);
/* The i-th network running fp32 for lack of the requested precision, or NULL past the last. */
SFV_API const char *sfv_runtime_fp32_fallback(const sfv_runtime *runtime, size_t i);

/* ---- generation options: unset values take the model's defaults from the manifest */
SFV_API sfv_status sfv_options_create(sfv_options **out);
SFV_API void sfv_options_destroy(sfv_options *options);
SFV_API sfv_status sfv_options_set_num_frames(sfv_options *options, int32_t frames);
SFV_API sfv_status sfv_options_set_size(sfv_options *options, int32_t height, int32_t width); /* 0: the model's */
SFV_API sfv_status sfv_options_set_sampler(sfv_options *options, const char *sampler); /* "euler" | "lcm" */
SFV_API sfv_status sfv_options_set_steps(sfv_options *options, int32_t steps);
SFV_API sfv_status sfv_options_set_min_guidance(sfv_options *options, double weight);
SFV_API sfv_status sfv_options_set_max_guidance(sfv_options *options, double weight); /* <= 1: no guidance */
SFV_API sfv_status sfv_options_set_fps(sfv_options *options, int32_t fps);
SFV_API sfv_status sfv_options_set_motion_bucket_id(sfv_options *options, int32_t id);
SFV_API sfv_status sfv_options_set_noise_aug_strength(sfv_options *options, double strength);
SFV_API sfv_status sfv_options_set_decode_chunk_size(sfv_options *options, int32_t frames);
SFV_API sfv_status sfv_options_set_decoder(sfv_options *options, const char *decoder); /* "full" | "fast" */
/* Seed of the portable splitmix64 generator (>= 0); image i of a call draws with seed + i unless
 * sfv_options_set_seeds gives one seed per image. */
SFV_API sfv_status sfv_options_set_seed(sfv_options *options, int64_t seed);
SFV_API sfv_status sfv_options_set_seeds(sfv_options *options, const int64_t *seeds, size_t count);
/* Explicit unit-normal noise for image `index` instead of its seed (copied): name is
 * "augmentation" [1, 3, H, W], "latents" [1, F, C, h, w] or, for the lcm sampler, "steps"
 * [steps - 1, 1, F, C, h, w]; shape may be NULL (then only the element count is checked).
 * source names the noise in error messages (may be NULL). */
SFV_API sfv_status sfv_options_set_noise(sfv_options *options, size_t index, const char *name, const float *data, size_t count,
                                         const int64_t *shape, size_t ndim, const char *source);
SFV_API sfv_status sfv_options_set_progress(sfv_options *options, sfv_progress_fn callback, void *user_data);

/* ---- generation */
/* One clip per image, all images denoised together (one UNet batch). The images may differ in
 * size; the clips share the options' frames, height and width. options may be NULL. */
SFV_API sfv_status sfv_generate(const sfv_runtime *runtime, const sfv_image *images, size_t count, const sfv_options *options,
                                sfv_result **out);
SFV_API size_t sfv_result_count(const sfv_result *result);
SFV_API sfv_status sfv_result_clip(const sfv_result *result, size_t index, sfv_clip *out);
SFV_API sfv_status sfv_result_timings(const sfv_result *result, sfv_timings *out);
SFV_API void sfv_result_destroy(sfv_result *result);

#ifdef __cplusplus
}
#endif

#endif /* SFV_SFV_H */
