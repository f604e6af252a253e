// The README's embedding snippet: one SF-V step on a grey image, frames and timings printed.
#include <sfv/runtime.hpp>

#include <cstdio>
#include <vector>

int main(int argc, char** argv) try {
    if (argc != 2) return std::fprintf(stderr, "usage: app BUNDLE_DIR\n"), 2;
    sfv::Runtime rt(argv[1]);  // checks manifest + sha256, opens CPU sessions
    const auto& m = rt.model();
    std::vector<std::uint8_t> rgb(std::size_t(m.default_width) * m.default_height * 3, 128);
    sfv::GenerateOptions o;
    o.steps = 1, o.max_guidance = 1.0, o.seed = 7;  // SF-V: one step, no guidance
    sfv::Clip clip = rt.generate({rgb.data(), m.default_width, m.default_height}, o);
    std::printf("%d frames %dx%d, %.3f s (unet %.3f s)\n", clip.frames, clip.width, clip.height,
                clip.timings.total, clip.timings.unet);
    return 0;
} catch (const sfv::Error& e) {  // BundleError, InputError, BackendError
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
}
