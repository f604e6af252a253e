// Where the C++ runtime's start-up goes, for benchmarks/cpp_startup.py: reading the manifest,
// hashing the graphs, creating each network's session one after the other, the runtime's own
// opening (hashes and sessions in parallel threads), and decoding the input image. Prints one JSON object (seconds).
//
//   sfv_startup_probe BUNDLE_DIR IMAGE.png [THREADS]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#include <stb/stb_image.h>

#include "bundle.hpp"
#include "engine.hpp"
#include "session.hpp"

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

int main(int argc, char** argv) try {
    if (argc < 3) return std::fprintf(stderr, "usage: sfv_startup_probe BUNDLE_DIR IMAGE.png [THREADS]\n"), 2;
    sfv::RuntimeOptions ro;
    ro.threads = argc > 3 ? std::atoi(argv[3]) : 0;
    std::string json = "{";
    auto add = [&](const std::string& key, double v) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.6f", v);
        json += (json.size() > 1 ? ", \"" : "\"") + key + "\": " + buf;
    };
    auto t = Clock::now();
    int w = 0, h = 0, n = 0;
    stbi_image_free(stbi_load(argv[2], &w, &h, &n, 3));
    add("image_load", since(t));
    t = Clock::now();
    const auto manifest = sfv::detail::load_manifest(argv[1], ro.precision);
    add("manifest", since(t));
    t = Clock::now();
    sfv::detail::verify_checksums(manifest);
    add("sha256", since(t));
    double sequential = 0;
    for (const auto& net : manifest.networks) {
        t = Clock::now();
        sfv::detail::Session s(net, ro);
        const double dt = since(t);
        sequential += dt;
        add("session_" + net.name, dt);
    }
    add("sessions_one_after_another", sequential);
    t = Clock::now();
    sfv::detail::Engine engine(argv[1], ro);  // manifest, sha256 and sessions, in parallel threads
    add("runtime_open", since(t));
    std::printf("%s}\n", json.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
}
