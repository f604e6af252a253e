#include "ort_cache.hpp"

#include <sys/stat.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "sha256.hpp"

namespace sfv::detail {
namespace fs = std::filesystem;

namespace {

// One fact each, as engines/ort_cache.py states them: the key must come out byte for byte the same.
constexpr int kKeyVersion = 1;
constexpr const char* kLevel = "all";  // ORT_ENABLE_ALL, as every CPU session sets it (session.cpp)
const std::vector<std::string> kOptimiserConfig = {"session.x64quantprecision=1"};
constexpr const char* kModelFile = "model.onnx";
constexpr const char* kDataFile = "model.onnx.data";
constexpr const char* kKeyFile = "key.txt";
constexpr const char* kCacheDirName = "ort-cache";

std::string read_file(const fs::path& p, bool* ok) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    *ok = f.good() || f.eof();
    return *ok ? s.str() : std::string();
}

/// The mode open()/mkdir() would give: 0777 less the umask, read from /proc without setting it.
mode_t directory_mode() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("Umask:", 0) == 0) return 0777 & ~static_cast<mode_t>(std::strtol(line.c_str() + 6, nullptr, 8));
    return 0755;
}

/// A new private directory in `root` named prefix + random letters (mkdtemp), or empty on failure.
fs::path make_temp_dir(const fs::path& root, const std::string& prefix) {
    std::string tmpl = (root / (prefix + "XXXXXX")).string();
    if (!mkdtemp(tmpl.data())) return {};
    return tmpl;
}

void remove_entry(const fs::path& root, const std::string& name) {
    const fs::path aside = make_temp_dir(root, ".old-" + name + "-");
    if (aside.empty()) return;
    std::error_code ec;
    fs::rename(root / name, aside / "entry", ec);  // moved aside first: no reader sees half an entry
    fs::remove_all(aside, ec);
}

Ort::Session plain_session(Ort::Env& env, const std::string& file, const Ort::SessionOptions& options) {
    return Ort::Session(env, file.c_str(), options);
}

}  // namespace

std::vector<std::string> cpu_flags() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    std::vector<std::string> flags;
    while (std::getline(f, line)) {
        if (line.rfind("flags", 0) != 0) continue;
        const auto colon = line.find(':');
        if (colon == std::string::npos) break;
        std::istringstream words(line.substr(colon + 1));
        for (std::string w; words >> w;) flags.push_back(w);
        break;
    }
    std::sort(flags.begin(), flags.end());
    flags.erase(std::unique(flags.begin(), flags.end()), flags.end());
    return flags;
}

std::string ort_cache_key(const std::string& graph_sha256) {
    utsname u{};
    uname(&u);
    std::string flags;
    for (const auto& f : cpu_flags()) flags += (flags.empty() ? "" : " ") + f;
    std::string key = "sfv-ort-cache " + std::to_string(kKeyVersion) + "\n";
    key += "onnxruntime " + Ort::GetVersionString() + "\n";
    key += std::string("machine ") + u.machine + "\n";
    key += "cpu_flags " + flags + "\n";
    key += "graph " + graph_sha256 + "\n";
    key += std::string("level ") + kLevel + "\n";
    for (const auto& c : kOptimiserConfig) key += "config " + c + "\n";
    return key;
}

std::string ort_cache_entry_name(const std::string& key) {
    Sha256 h;
    h.update(key.data(), key.size());
    return h.hexdigest().substr(0, 32);
}

std::string default_ort_cache_dir(const std::string& graph_file) {
    return (fs::path(graph_file).parent_path() / kCacheDirName).string();
}

Ort::Session open_cached_session(Ort::Env& env, const std::string& graph_file, const std::string& graph_sha256,
                                 const Ort::SessionOptions& options, const std::string& cache_dir, bool* hit) {
    if (hit) *hit = false;
    if (cache_dir.empty() || graph_sha256.empty()) return plain_session(env, graph_file, options);
    const fs::path root(cache_dir);
    const std::string key = ort_cache_key(graph_sha256);
    const std::string name = ort_cache_entry_name(key);
    const fs::path entry = root / name;

    bool ok = false;
    std::error_code ec;
    const bool present = fs::exists(entry, ec);
    if (present && read_file(entry / kKeyFile, &ok) == key && ok && fs::is_regular_file(entry / kModelFile)) {
        Ort::SessionOptions cached = options.Clone();
        cached.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_DISABLE_ALL);  // optimised already
        try {
            Ort::Session s(env, (entry / kModelFile).c_str(), cached);
            if (hit) *hit = true;
            return s;
        } catch (const Ort::Exception&) {
        }
    }
    if (present) remove_entry(root, name);  // damaged (or a key collision): optimise the source again, rewrite it

    fs::create_directories(root, ec);
    const fs::path tmp = make_temp_dir(root, ".tmp-" + name + "-");
    if (tmp.empty()) return plain_session(env, graph_file, options);  // not writable: start without the cache
    fs::permissions(tmp, static_cast<fs::perms>(directory_mode()), ec);
    Ort::SessionOptions saving = options.Clone();
    saving.SetOptimizedModelFilePath((tmp / kModelFile).c_str());
    saving.AddConfigEntry("session.optimized_model_external_initializers_file_name", kDataFile);
    saving.AddConfigEntry("session.optimized_model_external_initializers_min_size_in_bytes", "1024");
    saving.SetLogSeverityLevel(3);  // ORT warns that an NCHWc graph is hardware-specific: the key says whose
    try {
        Ort::Session s(env, graph_file.c_str(), saving);
        if (fs::is_regular_file(tmp / kModelFile)) {
            std::ofstream key_file(tmp / kKeyFile, std::ios::binary);
            key_file << key;  // last: an entry with its key is complete
            key_file.close();
            if (key_file) fs::rename(tmp, entry, ec);  // atomic; another process's entry for the same key wins
        }
        fs::remove_all(tmp, ec);
        return s;
    } catch (...) {
        fs::remove_all(tmp, ec);
        throw;
    }
}

}  // namespace sfv::detail
