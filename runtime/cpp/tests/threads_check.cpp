// One opened Runtime, several threads at once: each thread's clips equal the clips one thread
// makes alone (same seeds), byte for byte; and one batched call of K images equals K calls.
//
//   sfv_threads_check BUNDLE_DIR [THREADS=4] [ROUNDS=2]
//
// Prints one line per check; exits 1 if a check fails, 2 on an sfv::Error.
#include <sfv/runtime.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

std::vector<std::uint8_t> test_image(int w, int h) {
    std::vector<std::uint8_t> rgb(std::size_t(w) * h * 3);
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            for (int c = 0; c < 3; ++c) rgb[(std::size_t(y) * w + x) * 3 + c] = std::uint8_t((x * 7 + y * 3 + c * 50) % 256);
    return rgb;
}

}  // namespace

int main(int argc, char** argv) try {
    if (argc < 2) return std::fprintf(stderr, "usage: sfv_threads_check BUNDLE_DIR [THREADS] [ROUNDS]\n"), 2;
    const int threads = argc > 2 ? std::atoi(argv[2]) : 4, rounds = argc > 3 ? std::atoi(argv[3]) : 2;
    sfv::RuntimeOptions ro;
    ro.threads = 1;  // several calls share the cores; one intra-op thread each
    const sfv::Runtime rt(argv[1], ro);
    const std::vector<std::uint8_t> pixels = test_image(70, 50);
    const sfv::ImageView image{pixels.data(), 70, 50};
    sfv::GenerateOptions o;
    o.num_frames = 3, o.steps = 6, o.max_guidance = 2.0, o.decode_chunk_size = 2;  // guided: a batch of two in the UNet

    // Reference: one thread, one clip per seed.
    std::vector<sfv::Clip> want(threads);
    for (int t = 0; t < threads; ++t) {
        o.seed = 100 + t;
        want[t] = rt.generate(image, o);
    }
    // The same seeds, all threads at once on the one Runtime, `rounds` times each.
    std::vector<int> mismatches(threads, 0);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            sfv::GenerateOptions mine = o;
            mine.seed = 100 + t;
            for (int r = 0; r < rounds; ++r) {
                const sfv::Clip got = rt.generate(image, mine);
                if (got.rgb != want[t].rgb || got.latents != want[t].latents) ++mismatches[t];
            }
        });
    for (auto& th : pool) th.join();
    int bad = 0;
    for (int v : mismatches) bad += v;
    std::printf("threads: %d threads x %d rounds on one runtime, %d clips differ from one thread's\n", threads, rounds, bad);

    // Batch: one call of `threads` images (seeds 100 + i) against the single calls above.
    sfv::GenerateOptions batch = o;
    batch.seed = 100;
    const std::vector<sfv::Clip> clips = rt.generate(std::vector<sfv::ImageView>(threads, image), batch);
    double lat_err = 0;
    int frame_err = 0;
    for (int t = 0; t < threads; ++t) {
        for (std::size_t k = 0; k < clips[t].latents.size(); ++k) lat_err = std::fmax(lat_err, std::fabs(clips[t].latents[k] - want[t].latents[k]));
        for (std::size_t k = 0; k < clips[t].rgb.size(); ++k) frame_err = std::max(frame_err, std::abs(int(clips[t].rgb[k]) - int(want[t].rgb[k])));
    }
    std::printf("batch: %zu clips of %d frames in one call (unet calls %d); latents max |batch - single| %.3g, frames max %d levels\n",
                clips.size(), clips.empty() ? 0 : clips[0].frames, clips.empty() ? 0 : clips[0].timings.unet_calls, lat_err, frame_err);
    return bad == 0 && lat_err <= 1e-5 && frame_err <= 1 && clips.size() == std::size_t(threads) ? 0 : 1;
} catch (const sfv::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
}
