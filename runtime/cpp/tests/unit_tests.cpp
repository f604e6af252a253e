// Unit tests of the runtime's pieces; `sfv_unit_tests NAME` runs one (CTest registers each).
// Tests that read fixtures written by tests/test_cpp_runtime.py (PIL resizes, np.savez files)
// find them in $SFV_TEST_FIXTURES and exit 77 (CTest: skipped) without it.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "bundle.hpp"
#include "noise.hpp"
#include "npy.hpp"
#include "resample.hpp"
#include "sampling.hpp"
#include "sfv/runtime.hpp"
#include "sha256.hpp"

namespace {

int failures = 0;
#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #cond "\n"; \
            ++failures;                                                                  \
        }                                                                                \
    } while (0)

constexpr int kSkip = 77;

/// Runs f, expects E whose message contains `part`.
template <class E>
void expect_error(const std::function<void()>& f, const std::string& part) {
    try {
        f();
        std::cerr << "expected an error containing: " << part << "\n";
        ++failures;
    } catch (const E& e) {
        if (std::string(e.what()).find(part) == std::string::npos) {
            std::cerr << "error message lacks '" << part << "': " << e.what() << "\n";
            ++failures;
        }
    }
}

std::string fixtures() {
    const char* d = std::getenv("SFV_TEST_FIXTURES");
    return d ? d : "";
}

std::string sha(const std::string& s) {
    sfv::detail::Sha256 h;
    h.update(s.data(), s.size());
    return h.hexdigest();
}

int test_sha256() {
    CHECK(sha("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(sha("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    // One million 'a' fed in uneven pieces: the block buffering must not matter.
    sfv::detail::Sha256 h;
    std::string a(1000000, 'a');
    for (std::size_t i = 0, n = 1; i < a.size(); i += n, n = n % 97 + 1) h.update(a.data() + i, std::min(n, a.size() - i));
    CHECK(h.hexdigest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    // Files: both implementations (OpenSSL's where built with it, and the portable one).
    char path[] = "/tmp/sfv-sha-XXXXXX";
    const int fd = ::mkstemp(path);
    CHECK(fd >= 0);
    std::string data(5000001, 'x');
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = char(i * 7919 % 251);
    CHECK(::write(fd, data.data(), data.size()) == ssize_t(data.size()));
    ::close(fd);
    CHECK(sfv::detail::sha256_file(path) == sha(data));
    CHECK(sfv::detail::sha256_file(path, true) == sha(data));
    ::unlink(path);
    return 0;
}

bool within_ulp(float a, float b) { return a == b || std::nextafter(a, b) == b; }

int test_noise() {
    using sfv::detail::NoiseStream;
    CHECK(sfv::detail::splitmix64(0) == 0xe220a8397b1dcdafull);
    CHECK(sfv::detail::splitmix64(1) == 0x910a2dec89025cc1ull);
    // Values of the documented formula (Python, math in double), per seed, stream, element 0, 1, 2, 1000.
    struct Case { std::int64_t seed; NoiseStream k; float v[4]; };
    const Case cases[] = {
        {0, NoiseStream::augmentation, {0.46343129873275757f, 1.1470288038253784f, 1.3444031476974487f, 0.6166313886642456f}},
        {0, NoiseStream::latents, {-0.49255630373954773f, 0.9970126748085022f, 0.5239086747169495f, -0.6239924430847168f}},
        {42, NoiseStream::augmentation, {1.448076844215393f, -1.0906275510787964f, 0.4435572922229767f, 1.4477697610855103f}},
        {42, NoiseStream::latents, {0.40226057171821594f, -0.14872997999191284f, -1.2983629703521729f, -0.3099958896636963f}},
        {-1, NoiseStream::augmentation, {-1.185924768447876f, 1.5076063871383667f, 0.7814876437187195f, -1.2434414625167847f}},
        {-1, NoiseStream::latents, {-1.1117435693740845f, -0.145562544465065f, 0.051809102296829224f, -0.3936546742916107f}},
    };
    for (const auto& c : cases) {
        auto v = sfv::detail::normal_noise(c.seed, c.k, 1001);
        const std::size_t idx[4] = {0, 1, 2, 1000};
        for (int j = 0; j < 4; ++j) {
            CHECK(within_ulp(v[idx[j]], c.v[j]));
            CHECK(v[idx[j]] == sfv::detail::normal_draw(c.seed, c.k, idx[j]));
        }
    }
    // Moments of 100k draws: a standard normal.
    auto v = sfv::detail::normal_noise(7, NoiseStream::latents, 100000);
    double m = 0, s = 0;
    for (float x : v) m += x, s += double(x) * x;
    m /= v.size(), s = s / v.size() - m * m;
    CHECK(std::abs(m) < 0.01 && std::abs(s - 1) < 0.02);
    return 0;
}

int test_schedule() {
    const float want[25] = {700.0f, 545.729248046875f, 421.5691223144531f, 322.45367431640625f, 244.0230712890625f,
                            182.54713439941406f, 134.8544464111328f, 98.26713562011719f, 70.54084014892578f, 49.809791564941406f,
                            34.536739349365234f, 23.467512130737305f, 15.589967727661133f, 10.097129821777344f, 6.3542656898498535f,
                            3.869697332382202f, 2.2691164016723633f, 1.2731772661209106f, 0.6781460046768188f, 0.33937814831733704f,
                            0.15740464627742767f, 0.06639907509088516f, 0.02480258047580719f, 0.007882495410740376f, 0.0020000000949949026f};
    auto s = sfv::detail::karras_sigmas(25, 0.002, 700.0);
    CHECK(s.size() == 26 && s[25] == 0.0f);
    for (int i = 0; i < 25; ++i) CHECK(s[i] == want[i]);
    auto one = sfv::detail::karras_sigmas(1, 0.002, 700.0);
    CHECK(one.size() == 2 && one[0] == 700.0f && one[1] == 0.0f);
    CHECK(sfv::detail::c_noise(700.0f) == float(0.25 * std::log(700.0)));
    CHECK(sfv::detail::initial_noise_scale(700.0f) == std::sqrt(700.0f * 700.0f + 1.0f));
    return 0;
}

int test_guidance() {
    const float want[14] = {1.0f, 1.1538461446762085f, 1.307692289352417f, 1.4615384340286255f, 1.615384578704834f,
                            1.7692307233810425f, 1.923076868057251f, 2.076923131942749f, 2.230769157409668f, 2.384615421295166f,
                            2.538461446762085f, 2.692307710647583f, 2.846153736114502f, 3.0f};
    auto w = sfv::detail::guidance_weights(1.0, 3.0, 14);
    for (int i = 0; i < 14; ++i) CHECK(w[i] == want[i]);
    CHECK(sfv::detail::guidance_weights(1.5, 3.0, 1) == std::vector<float>{1.5f});
    // Guidance: uncond + w * (cond - uncond), frame by frame.
    std::vector<float> u{1, 1, 2, 2}, c{3, 3, 4, 4};
    sfv::detail::apply_guidance(u.data(), c.data(), {0.5f, 2.0f}, 2);
    CHECK((c == std::vector<float>{2, 2, 6, 6}));
    return 0;
}

int test_euler() {
    // sigma -> 0 in one step lands on the denoised estimate: x*c_skip + F*c_out.
    const float sigma = 2.0f, x0 = 1.5f, f = -0.25f;
    float x = x0;
    sfv::detail::euler_step(&x, &f, 1, sigma, 0.0f);
    const float q = std::sqrt(sigma * sigma + 1.0f);
    const float denoised = f * (-sigma / q) + x0 / (sigma * sigma + 1.0f);
    const float d = (x0 - denoised) / sigma;
    CHECK(x == x0 + d * (0.0f - sigma));
    CHECK(std::abs(x - denoised) < 1e-6f);
    // UNet input: x / sqrt(sigma^2 + 1) then the image latent (zeros without one).
    std::vector<float> xs{2, 4}, lat{7}, out(4);
    sfv::detail::unet_sample(xs.data(), lat.data(), 0.0f, 2, 1, 1, out.data());
    CHECK((out == std::vector<float>{2, 7, 4, 7}));
    sfv::detail::unet_sample(xs.data(), nullptr, 0.0f, 2, 1, 1, out.data());
    CHECK((out == std::vector<float>{2, 0, 4, 0}));
    return 0;
}

int test_uint8() {
    // [1, 3, 1, 2] in channel-first order -> [1, 1, 2, 3]; clamp, round half to even.
    const float s[6] = {-1.0f, 1.0f, 0.0f, 5.0f, -5.0f, 2.0f * (2.5f / 255.0f) - 1.0f};
    std::uint8_t out[6];
    sfv::detail::to_uint8(s, 1, 1, 2, out);
    CHECK(out[0] == 0 && out[3] == 255);     // channel 0
    CHECK(out[1] == 128 && out[4] == 255);   // 127.5 -> 128 (even)
    CHECK(out[2] == 0);
    float v = (2.0f * (2.5f / 255.0f) - 1.0f) / 2.0f + 0.5f;
    CHECK(out[5] == std::uint8_t(std::nearbyint(v * 255.0f)));
    // VAE view: 2 * (u8 / 255) - 1, channel-first.
    const std::uint8_t px[3] = {0, 255, 51};
    auto vv = sfv::detail::vae_view(px, 1, 1);
    CHECK(vv[0] == -1.0f && vv[1] == 1.0f && vv[2] == 2.0f * (51.0f / 255.0f) - 1.0f);
    return 0;
}

// ----------------------------------------------------------------- manifest

struct TempDir {
    std::string path;
    TempDir() {
        char t[] = "/tmp/sfv-unit-XXXXXX";
        path = ::mkdtemp(t);
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
    void write(const std::string& name, const std::string& text) const { std::ofstream(path + "/" + name) << text; }
};

std::string manifest_json(int version, const std::string& graph_sha, const std::string& extra_net = "",
                          const std::string& drop_key = "") {
    const std::vector<std::pair<std::string, std::string>> config = {
        {"latent_channels", "4"}, {"vae_scale_factor", "2"}, {"unet_downsample", "2"}, {"embed_dim", "32"},
        {"clip_image_size", "224"}, {"num_frames", "3"}, {"default_height", "32"}, {"default_width", "48"},
        {"scaling_factor", "0.5"}, {"sigma_min", "0.002"}, {"sigma_max", "700.0"}, {"prediction_type", "\"v_prediction\""},
        {"steps", "25"}, {"fps", "7"}, {"motion_bucket_id", "127"}, {"min_guidance", "1.0"}, {"max_guidance", "3.0"},
        {"noise_aug_strength", "0.02"}};
    std::ostringstream m;
    m << R"({"format": "sfv-bundle", "format_version": )" << version << R"(, "model": {"config": {)";
    bool first_key = true;
    for (const auto& [key, value] : config) {
        if (key == drop_key) continue;
        m << (first_key ? "" : ", ") << '"' << key << "\": " << value;
        first_key = false;
    }
    m << R"(}}, "networks": {)";
    bool first = true;
    for (const auto& n : sfv::detail::kNetworks) {
        if (n == extra_net) continue;  // leave one out
        m << (first ? "" : ",") << '"' << n << R"(": {"inputs": [{"name": "in", "dtype": "float32", "shape": [1]}],
              "outputs": [{"name": "out", "dtype": "float32", "shape": [1]}],
              "variants": {"fp32": {"file": ")" << n << R"(.onnx", "external_data": null, "sha256": ")" << graph_sha << R"("}}})";
        first = false;
    }
    m << "}}";
    return m.str();
}

int test_manifest() {
    using sfv::detail::load_manifest;
    TempDir d;
    for (const auto& n : sfv::detail::kNetworks) d.write(n + ".onnx", "graph");
    const std::string good = sha("graph");

    expect_error<sfv::BundleError>([&] { load_manifest(d.path + "/nope", "fp32"); }, "does not exist; create one with `python -m export.onnx");
    expect_error<sfv::BundleError>([&] { load_manifest(d.path, "fp32"); }, "has no manifest.json: the export did not finish");
    d.write("manifest.json", "{not json");
    expect_error<sfv::BundleError>([&] { load_manifest(d.path, "fp32"); }, "manifest.json is not valid JSON");
    d.write("manifest.json", R"({"format": "other"})");
    expect_error<sfv::BundleError>([&] { load_manifest(d.path, "fp32"); }, "is not an sfv-bundle manifest; re-export the bundle");
    d.write("manifest.json", manifest_json(1, good));
    expect_error<sfv::BundleError>([&] { load_manifest(d.path, "fp32"); }, "has format_version 1, this toolkit reads version 2; re-export");
    d.write("manifest.json", manifest_json(2, good, "unet"));
    expect_error<sfv::BundleError>([&] { load_manifest(d.path, "fp32"); }, "lacks unet; re-export it with this toolkit");
    d.write("manifest.json", manifest_json(2, good));
    expect_error<sfv::BackendError>([&] { load_manifest(d.path, "fp64"); }, "unknown precision 'fp64'");
    CHECK(load_manifest(d.path, "int8").network("unet").precision == "fp32");  // fp32 where a variant is absent

    auto m = load_manifest(d.path, "fp32");
    CHECK(m.config.num_frames == 3 && m.config.default_width == 48 && m.config.scaling_factor == 0.5);
    CHECK(m.config.pixel_multiple() == 4 && m.config.clip_image_size == 224);
    CHECK(m.config.steps == 25 && m.config.max_guidance == 3.0 && m.config.fps == 7);
    d.write("manifest.json", manifest_json(2, good, "", "fps"));  // a missing key is an error, never SVD's default
    expect_error<sfv::BundleError>([&] { load_manifest(d.path, "fp32"); }, "model.config lacks fps; re-export the bundle");
    d.write("manifest.json", manifest_json(2, good));
    CHECK(m.networks.size() == 5 && m.network("unet").inputs[0].name == "in");
    sfv::detail::verify_checksums(m);  // all match

    d.write("vae_decoder.onnx", "changed");
    expect_error<sfv::BundleError>([&] { sfv::detail::verify_checksums(m); }, "vae_decoder.onnx does not match the sha256 in the manifest");
    std::remove((d.path + "/vae_decoder.onnx").c_str());
    expect_error<sfv::BundleError>([&] { load_manifest(d.path, "fp32"); }, "vae_decoder.onnx (network 'vae_decoder', fp32) is missing");

    sfv::detail::check_resolution(m.config, 32, 48);
    expect_error<sfv::InputError>([&] { sfv::detail::check_resolution(m.config, 30, 48); },
                                  "height 30 x width 48 is not supported: both must be positive multiples of 4");
    expect_error<sfv::InputError>([&] { sfv::detail::check_resolution(m.config, 0, 48); }, "try 4 x 48");
    return 0;
}

// ----------------------------------------------------------------- npy / npz

int test_npy() {
    TempDir d;
    const std::vector<float> v{1.5f, -2.0f, 3.25f, 0.0f, 1e-8f, 7.0f};
    npy::save(d.path + "/a.npy", "<f4", {1, 2, 3}, v.data(), v.size() * 4);
    auto a = npy::load_npy(d.path + "/a.npy");
    CHECK(a.dtype == "f4" && (a.shape == std::vector<std::int64_t>{1, 2, 3}) && a.as_float32() == v);
    const std::uint8_t u[3] = {1, 2, 255};
    npy::save(d.path + "/b.npy", "|u1", {3}, u, 3);
    auto b = npy::load_npy(d.path + "/b.npy");
    CHECK(b.dtype == "u1" && b.shape == std::vector<std::int64_t>{3} && b.bytes[2] == 255);
    expect_error<sfv::InputError>([&] { b.as_float32(); }, "expected a float32 array");
    d.write("bad.npy", "hello");
    expect_error<sfv::InputError>([&] { npy::load_npy(d.path + "/bad.npy"); }, "is not a .npy array");
    // Files written by numpy itself (fixtures): a 0-d array, float64, and the same data as `a`.
    if (fixtures().empty()) return 0;
    auto n = npy::load_npy(fixtures() + "/np_f4.npy");
    CHECK(n.shape == (std::vector<std::int64_t>{2, 3}) && n.as_float32() == v);
    return 0;
}

int test_npz() {
    if (fixtures().empty()) return kSkip;
    auto z = npy::load_npz(fixtures() + "/noise.npz");
    CHECK(z.count("augmentation") && z.count("latents"));
    CHECK(z["augmentation"].shape == (std::vector<std::int64_t>{1, 3, 4, 6}));
    CHECK(z["latents"].shape == (std::vector<std::int64_t>{1, 2, 4, 2, 3}));
    auto aug = z["augmentation"].as_float32(), lat = z["latents"].as_float32();
    // The fixture holds arange(n) / 8 in both arrays.
    for (std::size_t i = 0; i < aug.size(); ++i) CHECK(aug[i] == float(i) / 8.0f);
    for (std::size_t i = 0; i < lat.size(); ++i) CHECK(lat[i] == float(i) / 8.0f);
    expect_error<sfv::InputError>([&] { npy::load_npz(fixtures() + "/noise_compressed.npz"); }, "not np.savez_compressed");
    return 0;
}

// ----------------------------------------------------------------- Lanczos vs PIL

int test_lanczos() {
    if (fixtures().empty()) return kSkip;
    std::ifstream cases(fixtures() + "/lanczos_cases.txt");
    std::string in_file, out_file;
    int w, h, count = 0;
    while (cases >> in_file >> w >> h >> out_file) {
        auto in = npy::load_npy(fixtures() + "/" + in_file), want = npy::load_npy(fixtures() + "/" + out_file);
        auto got = sfv::detail::resize_lanczos_rgb8(in.bytes.data(), int(in.shape[1]), int(in.shape[0]), w, h);
        std::size_t diff = 0;
        for (std::size_t i = 0; i < got.size() && i < want.bytes.size(); ++i) diff += got[i] != want.bytes[i];
        if (got.size() != want.bytes.size() || diff) {
            std::cerr << in_file << " -> " << w << "x" << h << ": " << diff << " bytes differ from PIL\n";
            ++failures;
        }
        ++count;
    }
    CHECK(count >= 6);
    return 0;
}

// ----------------------------------------------------------------- C API statuses and last error

int test_capi() {
    sfv_runtime* rt = nullptr;
    CHECK(sfv_runtime_open("/nonexistent-bundle", nullptr, &rt) == SFV_STATUS_BUNDLE_ERROR && rt == nullptr);
    const std::string bundle_msg = sfv_last_error();
    CHECK(bundle_msg.find("bundle directory /nonexistent-bundle does not exist") == 0);
    CHECK(sfv_runtime_open("x", nullptr, nullptr) == SFV_STATUS_INPUT_ERROR);
    CHECK(std::string(sfv_last_error()) == "sfv_runtime_open: out is NULL; pass a valid pointer");
    // The last error is per thread: another thread sees none, and its own failure does not show here.
    std::string other_before, other_after;
    std::thread([&] {
        other_before = sfv_last_error();
        sfv_options* o = nullptr;
        sfv_options_create(&o);
        CHECK(sfv_options_set_noise(o, 0, "bogus", nullptr, 0, nullptr, 0, nullptr) == SFV_STATUS_INPUT_ERROR);
        other_after = sfv_last_error();
        sfv_options_destroy(o);
    }).join();
    CHECK(other_before.empty());
    CHECK(other_after == "noise array 'bogus' is unknown; name one of augmentation, latents, steps");
    CHECK(std::string(sfv_last_error()) == "sfv_runtime_open: out is NULL; pass a valid pointer");
    CHECK(std::string(sfv_status_name(SFV_STATUS_CANCELLED)) == "SFV_STATUS_CANCELLED");
    CHECK(sfv_result_count(nullptr) == 0);
    sfv_runtime_close(nullptr), sfv_options_destroy(nullptr), sfv_result_destroy(nullptr);  // NULL is accepted
    char version[32];
    std::snprintf(version, sizeof version, "%d.%d.%d", SFV_VERSION_MAJOR, SFV_VERSION_MINOR, SFV_VERSION_PATCH);
    CHECK(std::string(sfv_version()) == version);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::map<std::string, int (*)()> tests = {
        {"sha256", test_sha256}, {"noise", test_noise}, {"schedule", test_schedule}, {"guidance", test_guidance},
        {"euler", test_euler},   {"uint8", test_uint8}, {"manifest", test_manifest}, {"npy", test_npy},
        {"npz", test_npz},       {"lanczos", test_lanczos}, {"capi", test_capi}};
    if (argc != 2 || !tests.count(argv[1])) {
        std::cerr << "usage: sfv_unit_tests NAME (";
        for (const auto& t : tests) std::cerr << t.first << " ";
        std::cerr << ")\n";
        return 2;
    }
    int rc = tests.at(argv[1])();
    if (rc == kSkip) {
        std::cerr << "skipped: set SFV_TEST_FIXTURES (tests/test_cpp_runtime.py writes them)\n";
        return kSkip;
    }
    return failures ? 1 : 0;
}
