/* The C API from C: open a bundle, generate SF-V's one step for N grey images in one call with a
 * progress callback, print each clip; --cancel-at STAGE:STEP stops there instead.
 *
 *   cc -std=c11 sfv_example.c -I PREFIX/include -L PREFIX/lib -lsfv_runtime -Wl,-rpath,PREFIX/lib
 *   ./a.out BUNDLE_DIR [IMAGES] [--cancel-at unet:1]
 *
 * Exit status: 0 clips made, 3 cancelled, 2 any other error (the message on stderr). */
#include <sfv/sfv.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *cancel_stage; /* NULL: never cancel */
    int cancel_step;
    int events;
} progress_state;

static int on_progress(const sfv_progress *e, void *user_data) {
    progress_state *s = (progress_state *)user_data;
    ++s->events;
    if (e->latents)
        printf("progress %s %d/%d sigma %.4g latents [%lld, %lld, %lld, %lld, %lld]\n", e->stage, (int)e->step, (int)e->total,
               (double)e->sigma, (long long)e->latents_shape[0], (long long)e->latents_shape[1], (long long)e->latents_shape[2],
               (long long)e->latents_shape[3], (long long)e->latents_shape[4]);
    else
        printf("progress %s %d/%d\n", e->stage, (int)e->step, (int)e->total);
    return s->cancel_stage && strcmp(e->stage, s->cancel_stage) == 0 && e->step == s->cancel_step;
}

static int fail(sfv_status status) {
    fprintf(stderr, "error: %s (%s)\n", sfv_last_error(), sfv_status_name(status));
    return status == SFV_STATUS_CANCELLED ? 3 : 2;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: sfv_example BUNDLE_DIR [IMAGES] [--cancel-at STAGE:STEP]\n");
        return 2;
    }
    int images = 1;
    char stage[32] = "";
    progress_state progress = {NULL, 0, 0};
    for (int i = 2; i < argc; ++i) {
        if (strcmp(argv[i], "--cancel-at") == 0 && i + 1 < argc) {
            if (sscanf(argv[++i], "%31[a-z_]:%d", stage, &progress.cancel_step) != 2) return 2;
            progress.cancel_stage = stage;
        } else {
            images = atoi(argv[i]);
        }
    }
    printf("sfv_runtime %s\n", sfv_version());

    sfv_runtime *rt = NULL;
    sfv_status s = sfv_runtime_open(argv[1], NULL, &rt);
    if (s != SFV_STATUS_OK) return fail(s);
    sfv_model_info m;
    sfv_runtime_model(rt, &m);

    size_t size = (size_t)m.default_width * (size_t)m.default_height * 3;
    uint8_t *pixels = malloc(size);
    sfv_image *batch = malloc(sizeof(sfv_image) * (size_t)images);
    if (!pixels || !batch) return 2;
    memset(pixels, 128, size);
    for (int i = 0; i < images; ++i) batch[i] = (sfv_image){pixels, m.default_width, m.default_height};

    sfv_options *o = NULL;
    sfv_options_create(&o);
    sfv_options_set_steps(o, 1); /* SF-V: one step, no guidance */
    sfv_options_set_max_guidance(o, 1.0);
    sfv_options_set_seed(o, 7); /* image i: seed 7 + i */
    sfv_options_set_progress(o, on_progress, &progress);

    sfv_result *r = NULL;
    s = sfv_generate(rt, batch, (size_t)images, o, &r);
    int rc = 0;
    if (s != SFV_STATUS_OK) {
        rc = fail(s);
    } else {
        sfv_timings t;
        sfv_result_timings(r, &t);
        for (size_t i = 0; i < sfv_result_count(r); ++i) {
            sfv_clip c;
            sfv_result_clip(r, i, &c);
            unsigned long long sum = 0;
            for (size_t k = 0; k < c.rgb_size; ++k) sum += c.rgb[k];
            printf("clip %zu: %d frames %dx%d, rgb sum %llu\n", i, (int)c.frames, (int)c.width, (int)c.height, sum);
        }
        printf("%d progress events, %.3f s (unet %.3f s, %d calls)\n", progress.events, t.total, t.unet, (int)t.unet_calls);
    }
    sfv_result_destroy(r);
    sfv_options_destroy(o);
    sfv_runtime_close(rt);
    free(batch);
    free(pixels);
    return rc;
}
