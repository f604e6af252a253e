// sfv-generate: one image in, one clip out, with an exported bundle (the C++ twin of
// `python -m runtime.generate`, same flags).
//
//   sfv-generate --bundle B --image in.png --out clip.npy                  # SVD: 25 steps, guidance 1 -> 3
//   sfv-generate --bundle B --image in.png --out frames/ --steps 1 --max-guidance 1   # SF-V one step
//   sfv-generate ... --noise noise.npz --save-latents latents.npy          # reproduce another runtime
//   sfv-generate --bundle B --image in.png --out clip.npy --sampler lcm      # consistency sampling (AnimateLCM-SVD-xt)
//
// --bundle: the bundle directory (or its manifest.json).
// --decoder fast: the bundle's distilled vae_decoder_fast instead of the model's temporal decoder.
// --out: a .npy file (uint8 [F, H, W, 3]) or a directory of PNG frames (frame_0000.png, ...).
// --noise: an uncompressed .npz (np.savez) with float32 `augmentation` [1, 3, H, W] and
// `latents` [1, F, 4, h, w] (unit normal draws, before the initial noise scale), and for --sampler lcm
// `steps` [steps - 1, 1, F, 4, h, w] (the noise after each step but the last).
// Progress: one line per stage and UNet step on stderr, each ending in a carriage return (not with --quiet).
// Ctrl-C (SIGINT) or SIGTERM cancels at the next stage or step: nothing is written, exit 130.
// User errors print one line "error: ..." and exit 2.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#include <stb/stb_image.h>
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#include "npy.hpp"
#include "sfv/runtime.hpp"

namespace {

volatile sig_atomic_t g_interrupted = 0;
bool g_progress_shown = false;  // a progress line is open on stderr: an error starts a new line
extern "C" void on_signal(int) { g_interrupted = 1; }

const char* kUsage =
    "usage: sfv-generate --bundle DIR --image IN.png|jpg --out CLIP.npy|DIR [--sampler euler|lcm] [--steps N] [--frames N] [--height PX]\n"
    "                    [--width PX] [--seed N] [--noise NOISE.npz] [--min-guidance W] [--max-guidance W] [--fps N]\n"
    "                    [--motion-bucket-id N] [--noise-aug S] [--decode-chunk N] [--save-latents LAT.npy]\n"
    "                    [--provider cpu|cuda|tensorrt] [--trt-cache DIR] [--threads N] [--precision fp32|fp16|int8|fp8] [--decoder full|fast]\n"
    "                    [--generator splitmix] [--timings-json PATH] [--repeat N] [--quiet]\n";

bool is_dir(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// "npy" or "dir", as runtime/video.py's output_kind (less the video formats this example lacks).
std::string output_kind(const std::string& out) {
    const auto slash = out.find_last_of('/');
    const std::string base = slash == std::string::npos ? out : out.substr(slash + 1);
    if (ends_with(out, "/") || is_dir(out) || base.find('.') == std::string::npos || base.find('.') == 0) {
        struct stat st;
        if (::stat(out.c_str(), &st) == 0 && !S_ISDIR(st.st_mode))
            throw sfv::InputError(out + " exists and is not a directory; give a directory for PNG frames or a file ending in .npy");
        return "dir";
    }
    if (ends_with(out, ".npy")) return "npy";
    throw sfv::InputError("cannot write video to " + out + ": unknown extension '" + base.substr(base.rfind('.')) +
                          "'; sfv-generate writes .npy or a directory (one PNG per frame); use `python -m runtime.generate` for .mp4/.gif/.webp");
}

void write_png_dir(const sfv::Clip& clip, const std::string& dir) {
    ::mkdir(dir.c_str(), 0777);
    if (!is_dir(dir)) throw sfv::InputError("cannot create directory " + dir + "; check the parent exists and is writable");
    const std::size_t frame = std::size_t(clip.height) * clip.width * 3;
    for (int f = 0; f < clip.frames; ++f) {
        char name[32];
        std::snprintf(name, sizeof name, "/frame_%04d.png", f);
        const std::string final = dir + name, tmp = final + ".tmp";
        if (!stbi_write_png(tmp.c_str(), clip.width, clip.height, 3, clip.rgb.data() + f * frame, clip.width * 3) ||
            std::rename(tmp.c_str(), final.c_str()) != 0)
            throw sfv::InputError("cannot write " + final + "; check the directory is writable");
    }
}

/// InputError unless a file can be created where `path` is written (runtime/video.py's
/// check_writable, same words): probed with a temporary file, removed at once, before any work.
void check_writable(const std::string& path) {
    std::vector<std::string> places;
    if (is_dir(path)) places.push_back(path);  // an existing frame directory is written into
    const auto slash = path.find_last_of('/', path.size() > 1 && path.back() == '/' ? path.size() - 2 : std::string::npos);
    places.push_back(slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash));
    for (const auto& place : places) {
        std::string probe = place + "/.sfv-probe-XXXXXX";
        const int fd = ::mkstemp(probe.data());
        if (fd < 0) {
            std::string target = path;
            while (target.size() > 1 && target.back() == '/') target.pop_back();
            throw sfv::InputError("cannot write " + target + ": " + place + " is not writable (" + std::strerror(errno) +
                                  "); choose a writable output directory");
        }
        ::close(fd);
        ::unlink(probe.c_str());
    }
}

/// --bundle: the directory, or the path of its manifest.json (runtime/generate.py's bundle_dir).
std::string bundle_dir(const std::string& arg) {
    struct stat st;
    const bool exists = ::stat(arg.c_str(), &st) == 0;
    if (exists && S_ISDIR(st.st_mode)) return arg;
    const auto slash = arg.find_last_of('/');
    if ((slash == std::string::npos ? arg : arg.substr(slash + 1)) == "manifest.json")
        return slash == std::string::npos ? "." : slash == 0 ? "/" : arg.substr(0, slash);
    if (exists)
        throw sfv::InputError("--bundle takes the bundle directory (the one holding manifest.json), not the file " + arg + "; pass the directory");
    return arg;
}

/// The image as RGB8 [h, w, 3] by runtime/preprocess.py's rule: a 16-bit sample becomes its high
/// byte (value >> 8), grey is repeated into R, G and B, alpha is dropped. (stb_image's own 16 -> 8
/// conversion is the same today; doing it here keeps the rule ours, not a library version's.)
std::vector<std::uint8_t> load_rgb8(const std::string& path, int& w, int& h) {
    int n = 0;
    const bool wide = stbi_is_16_bit(path.c_str());
    std::unique_ptr<void, void (*)(void*)> data(wide ? static_cast<void*>(stbi_load_16(path.c_str(), &w, &h, &n, 3))
                                                     : static_cast<void*>(stbi_load(path.c_str(), &w, &h, &n, 3)),
                                                stbi_image_free);
    if (!data) {
        if (!std::ifstream(path)) throw sfv::InputError("input image " + path + " does not exist (or is not a file); pass --image PATH to a PNG/JPEG");
        throw sfv::InputError(path + " is not a readable image (" + stbi_failure_reason() + "); pass a PNG or JPEG file");
    }
    const std::size_t count = std::size_t(w) * h * 3;
    if (!wide) {
        const auto* p = static_cast<const std::uint8_t*>(data.get());
        return {p, p + count};
    }
    const auto* p = static_cast<const std::uint16_t*>(data.get());
    std::vector<std::uint8_t> rgb(count);
    for (std::size_t i = 0; i < count; ++i) rgb[i] = std::uint8_t(p[i] >> 8);
    return rgb;
}

int parse_int(const std::string& flag, const std::string& v) {
    char* end = nullptr;
    long r = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end) throw sfv::InputError(flag + " takes an integer, got '" + v + "'");
    return int(r);
}

double parse_double(const std::string& flag, const std::string& v) {
    char* end = nullptr;
    double r = std::strtod(v.c_str(), &end);
    if (v.empty() || *end) throw sfv::InputError(flag + " takes a number, got '" + v + "'");
    return r;
}

int run(int argc, char** argv) {
    std::map<std::string, std::string> a;
    bool quiet = false;
    const std::string valued[] = {"--bundle", "--image", "--out", "--steps", "--frames", "--height", "--width", "--seed", "--noise",
                                  "--min-guidance", "--max-guidance", "--fps", "--motion-bucket-id", "--noise-aug", "--decode-chunk",
                                  "--save-latents", "--provider", "--threads", "--precision", "--timings-json", "--generator", "--repeat",
                                  "--decoder", "--sampler", "--trt-cache"};
    for (int i = 1; i < argc; ++i) {
        std::string k = argv[i];
        if (k == "-h" || k == "--help") {
            std::cout << kUsage;
            return 0;
        }
        if (k == "--quiet") {
            quiet = true;
            continue;
        }
        std::string v;
        if (auto eq = k.find('='); eq != std::string::npos) v = k.substr(eq + 1), k = k.substr(0, eq);
        else if (i + 1 < argc) v = argv[++i];
        else throw sfv::InputError(k + " needs a value\n" + kUsage);
        if (std::find(std::begin(valued), std::end(valued), k) == std::end(valued)) throw sfv::InputError("unknown flag " + k + "\n" + kUsage);
        a[k] = v;
    }
    for (const char* req : {"--bundle", "--image", "--out"})
        if (!a.count(req)) throw sfv::InputError(std::string("the following arguments are required: ") + req + "\n" + kUsage);

    // 1. Cheap checks first: nothing heavy loads before the inputs are known to be usable.
    const std::string bundle = bundle_dir(a["--bundle"]);
    const std::string kind = output_kind(a["--out"]);
    for (const char* flag : {"--out", "--save-latents"})
        if (a.count(flag)) check_writable(a[flag]);
    sfv::GenerateOptions o;
    auto opt_int = [&](const char* flag, std::optional<int>& into) { if (a.count(flag)) into = parse_int(flag, a[flag]); };
    auto opt_dbl = [&](const char* flag, std::optional<double>& into) { if (a.count(flag)) into = parse_double(flag, a[flag]); };
    opt_int("--steps", o.steps), opt_int("--frames", o.num_frames), opt_int("--height", o.height), opt_int("--width", o.width);
    opt_int("--fps", o.fps), opt_int("--motion-bucket-id", o.motion_bucket_id), opt_int("--decode-chunk", o.decode_chunk_size);
    opt_dbl("--min-guidance", o.min_guidance), opt_dbl("--max-guidance", o.max_guidance), opt_dbl("--noise-aug", o.noise_aug_strength);
    if (a.count("--seed")) o.seed = parse_int("--seed", a["--seed"]);
    if (a.count("--decoder")) o.decoder = a["--decoder"];
    if (a.count("--sampler")) {
        if (a["--sampler"] != "euler" && a["--sampler"] != "lcm")
            throw sfv::InputError("argument --sampler: invalid choice: '" + a["--sampler"] + "' (choose from 'euler', 'lcm')");
        o.sampler = a["--sampler"];
    }
    if (a.count("--generator") && a["--generator"] != "splitmix")
        throw sfv::InputError("sfv-generate draws its noise with the portable splitmix generator only; for torch's draws save them with "
                              "`python -m runtime.generate --generator torch --save-noise noise.npz` and pass --noise noise.npz");
    sfv::RuntimeOptions ro;
    if (a.count("--threads")) ro.threads = parse_int("--threads", a["--threads"]);
    if (a.count("--precision")) ro.precision = a["--precision"];
    if (a.count("--trt-cache")) ro.trt_cache_dir = a["--trt-cache"];
    if (a.count("--provider")) {
        const std::string p = a["--provider"];
        if (p == "cpu") ro.provider = sfv::Provider::cpu;
        else if (p == "cuda") ro.provider = sfv::Provider::cuda;
        else if (p == "tensorrt") ro.provider = sfv::Provider::tensorrt;
        else throw sfv::InputError("--provider must be cpu, cuda or tensorrt, got '" + p + "'");
    }
    sfv::Noise noise;
    if (a.count("--noise")) {  // messages as runtime.noise.ExplicitNoise
        const std::string path = a["--noise"];
        if (!std::ifstream(path)) throw sfv::InputError("noise file " + path + " does not exist; write one with runtime.noise.save_noise or --save-noise");
        auto arrays = npy::load_npz(path);
        for (const char* key : {"augmentation", "latents"})
            if (!arrays.count(key)) throw sfv::InputError(path + " lacks the array '" + key + "'; a noise file holds 'augmentation' and 'latents'");
        noise.augmentation = arrays["augmentation"].as_float32(), noise.augmentation_shape = arrays["augmentation"].shape;
        noise.latents = arrays["latents"].as_float32(), noise.latents_shape = arrays["latents"].shape;
        if (arrays.count("steps")) noise.steps = arrays["steps"].as_float32(), noise.steps_shape = arrays["steps"].shape;
        noise.source = path;
        o.noise = &noise;
    }
    int w = 0, h = 0;
    const std::vector<std::uint8_t> pixels = load_rgb8(a["--image"], w, h);

    // 2. Sessions, 3. the clip.
    sfv::Runtime rt(bundle, ro);
    if (const auto& fallback = rt.model().fp32_fallback; !fallback.empty()) {  // engines/factory.py's warning, word for word
        std::string names;
        for (const auto& n : fallback) names += (names.empty() ? "" : ", ") + n;
        std::cerr << "bundle " << bundle << " has no " << ro.precision << " graph for " << names << "; running fp32 there\n";
    }
    // --repeat N: generate N times (warm sessions from the second on) and keep the last clip's timings.
    const int repeat = a.count("--repeat") ? parse_int("--repeat", a["--repeat"]) : 1;
    if (repeat < 1) throw sfv::InputError("--repeat must be a positive integer, got " + std::to_string(repeat));
    // Ctrl-C cancels at the next progress event (the library checks between stages and steps).
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    ::sigaction(SIGINT, &sa, nullptr), ::sigaction(SIGTERM, &sa, nullptr);
    o.progress = [quiet](const sfv_progress& e) {
        if (!quiet) std::fprintf(stderr, "sfv-generate: %s %d/%d\r", e.stage, int(e.step), int(e.total)), g_progress_shown = true;
        return g_interrupted != 0;
    };
    sfv::Clip clip;
    for (int i = 0; i < repeat; ++i) clip = rt.generate({pixels.data(), w, h}, o);
    if (g_progress_shown) std::fprintf(stderr, "\n"), g_progress_shown = false;
    if (kind == "npy")
        npy::save(a["--out"], "|u1", {clip.frames, clip.height, clip.width, 3}, clip.rgb.data(), clip.rgb.size());
    else
        write_png_dir(clip, a["--out"]);
    if (a.count("--save-latents")) {
        const auto& m = rt.model();
        npy::save(a["--save-latents"], "<f4", {1, clip.frames, m.latent_channels, clip.height / m.vae_scale_factor, clip.width / m.vae_scale_factor},
                  clip.latents.data(), clip.latents.size() * sizeof(float));
    }
    const auto& t = clip.timings;
    char json[512];
    std::snprintf(json, sizeof json,
                  "{\"preprocess\": %.6f, \"image_encoder\": %.6f, \"vae_encoder\": %.6f, \"unet\": %.6f, \"sampler\": %.6f, "
                  "\"vae_decoder\": %.6f, \"total\": %.6f, \"unet_calls\": %d}",
                  t.preprocess, t.image_encoder, t.vae_encoder, t.unet, t.sampler, t.vae_decoder, t.total, t.unet_calls);
    if (a.count("--timings-json")) {
        std::ofstream f(a["--timings-json"]);
        f << json << "\n";
    }
    if (!quiet) std::cerr << "wrote " << a["--out"] << " (" << clip.frames << " frames, " << clip.width << "x" << clip.height << "); seconds " << json << "\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const sfv::Cancelled& e) {
        std::cerr << (g_progress_shown ? "\n" : "") << "error: " << e.what() << "\n";
        return 130;
    } catch (const sfv::Error& e) {
        std::cerr << (g_progress_shown ? "\n" : "") << "error: " << e.what() << "\n";
        return 2;
    }
}
