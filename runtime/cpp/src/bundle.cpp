#include "bundle.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sfv/runtime.hpp"
#include "sha256.hpp"

namespace sfv::detail {

const std::vector<std::string> kNetworks = {"clip_preprocess", "image_encoder", "vae_encoder", "unet", "vae_decoder"};
const std::vector<std::string> kOptionalNetworks = {"vae_decoder_fast"};

namespace {

using nlohmann::json;

bool is_dir(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string join(const std::string& root, const std::string& name) {
    return root.empty() || root.back() == '/' ? root + name : root + "/" + name;
}

/// Python's repr() of a JSON value as a manifest field would print it.
std::string py_repr(const json& v) {
    if (v.is_null()) return "None";
    if (v.is_string()) return "'" + v.get<std::string>() + "'";
    if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
    return v.dump();
}

std::vector<TensorInfo> tensors(const json& list) {
    std::vector<TensorInfo> out;
    for (const auto& t : list) out.push_back({t.at("name").get<std::string>(), t.at("dtype").get<std::string>()});
    return out;
}

/// A required model.config value: a missing key is an error, never a default (contract/specs.py
/// ModelConfig.from_json says the same).
template <class T>
void read(const std::string& path, const json& cfg, const char* key, T& into) {
    if (!cfg.contains(key))
        throw BundleError(path + ": the manifest's model.config lacks " + key + "; re-export the bundle with this toolkit");
    into = cfg.at(key).get<T>();
}

/// The manifest's "sampler", as strict as contract/bundle.py SamplerConfig.from_json (message after "path: ").
SamplerConfig read_sampler(const json& m) {
    SamplerConfig out;
    if (!m.contains("sampler")) return out;
    const json& s = m["sampler"];
    if (!s.is_object() || !s.contains("name") || !s["name"].is_string() || (s["name"] != "euler" && s["name"] != "lcm"))
        throw BundleError("'sampler' must be an object whose 'name' is one of euler, lcm, got " + py_repr(s.is_object() ? s.value("name", json()) : s));
    for (auto it = s.begin(); it != s.end(); ++it)
        if (it.key() != "name" && it.key() != "steps" && it.key() != "min_guidance" && it.key() != "max_guidance" && it.key() != "params")
            throw BundleError("'sampler' has unknown keys ['" + it.key() + "']");
    out.name = s["name"].get<std::string>();
    auto positive = [&](const char* key) -> const json* {
        if (!s.contains(key) || s[key].is_null()) return nullptr;
        const json& v = s[key];
        if (!v.is_number() || v.get<double>() <= 0 || (std::string(key) == "steps" && !v.is_number_integer()))
            throw BundleError(std::string("'sampler.") + key + "' must be a positive number, got " + v.dump());
        return &v;
    };
    if (auto v = positive("steps")) out.steps = v->get<int>();
    if (auto v = positive("min_guidance")) out.min_guidance = v->get<double>();
    if (auto v = positive("max_guidance")) out.max_guidance = v->get<double>();
    const json params = s.value("params", json());
    if (out.name == "lcm") {
        static const char* kKeys[] = {"clip_denoised", "num_train_timesteps", "rho", "s_noise", "sigma_data", "sigma_max", "sigma_min"};
        bool exact = params.is_object() && params.size() == std::size(kKeys);
        for (const char* k : kKeys) exact = exact && params.contains(k);
        if (!exact)
            throw BundleError("'sampler.params' of lcm must hold exactly ['clip_denoised', 'num_train_timesteps', 'rho', 's_noise', "
                              "'sigma_data', 'sigma_max', 'sigma_min'], got " + params.dump());
        auto& p = out.params;
        try {
            p.num_train_timesteps = params.at("num_train_timesteps").get<int>();
            p.sigma_min = params.at("sigma_min").get<double>(), p.sigma_max = params.at("sigma_max").get<double>();
            p.sigma_data = params.at("sigma_data").get<double>(), p.s_noise = params.at("s_noise").get<double>();
            p.rho = params.at("rho").get<double>(), p.clip_denoised = params.at("clip_denoised").get<bool>();
        } catch (const json::exception& e) {
            throw BundleError(std::string("'sampler.params' of lcm has a value of the wrong type (") + e.what() + ")");
        }
    } else if (!params.is_null() && !params.empty()) {
        throw BundleError("the euler sampler takes no 'params', got " + params.dump());
    }
    return out;
}

}  // namespace

SamplerConfig SamplerConfig::builtin(const std::string& name) {
    SamplerConfig s;
    s.name = name;
    if (name == "lcm") s.steps = 4, s.min_guidance = 1.0, s.max_guidance = 1.2;
    return s;
}

const NetworkInfo& Manifest::network(const std::string& name) const {
    for (const auto& n : networks)
        if (n.name == name) return n;
    throw BundleError("bundle " + root + " has no network '" + name + "'");
}

Manifest load_manifest(const std::string& root, const std::string& precision) {
    if (!is_dir(root))
        throw BundleError("bundle directory " + root + " does not exist; create one with `python -m export.onnx --model DIR|tiny --out " + root + "`");
    const std::string path = join(root, "manifest.json");
    if (!is_file(path))
        throw BundleError(root + " has no manifest.json: the export did not finish or this is not a bundle; re-run `python -m export.onnx --out " + root + "`");
    json m;
    {
        std::ifstream f(path);
        try {
            m = json::parse(f);
        } catch (const json::exception& e) {
            throw BundleError(path + " is not valid JSON (" + e.what() + "); re-export the bundle");
        }
    }
    if (!m.is_object() || m.value("format", json()) != kFormat)
        throw BundleError(path + " is not an " + kFormat + " manifest; re-export the bundle");
    const json version = m.value("format_version", json());
    if (version != kFormatVersion)
        throw BundleError(path + " has format_version " + py_repr(version) + ", this toolkit reads version " + std::to_string(kFormatVersion) +
                          "; re-export the bundle with this version of the toolkit");
    for (const char* key : {"networks", "model"})
        if (!m.contains(key) || !m[key].is_object())
            throw BundleError(path + " lacks the '" + key + "' section; re-export the bundle");

    Manifest out;
    out.root = root;
    try {
        out.sampler = read_sampler(m);
    } catch (const BundleError& e) {
        throw BundleError(path + ": " + e.what() + "; re-export the bundle (`python -m export.onnx ... --sampler euler|lcm`)");
    }
    try {
        const json& cfg = m["model"].at("config");
        if (!cfg.is_object() || !cfg.contains("num_frames") || !cfg["num_frames"].is_number_integer())
            // the frame count differs between models (14 SVD, 25 SVD-XT): never assumed
            throw BundleError(path + ": model.config lacks num_frames (the model's frame count); re-export the bundle");
        auto& c = out.config;
        read(path, cfg, "latent_channels", c.latent_channels);
        read(path, cfg, "vae_scale_factor", c.vae_scale_factor);
        read(path, cfg, "unet_downsample", c.unet_downsample);
        read(path, cfg, "embed_dim", c.embed_dim);
        read(path, cfg, "clip_image_size", c.clip_image_size);
        read(path, cfg, "num_frames", c.num_frames);
        read(path, cfg, "default_height", c.default_height);
        read(path, cfg, "default_width", c.default_width);
        read(path, cfg, "scaling_factor", c.scaling_factor);
        read(path, cfg, "sigma_min", c.sigma_min);
        read(path, cfg, "sigma_max", c.sigma_max);
        read(path, cfg, "prediction_type", c.prediction_type);
        read(path, cfg, "steps", c.steps);
        read(path, cfg, "fps", c.fps);
        read(path, cfg, "motion_bucket_id", c.motion_bucket_id);
        read(path, cfg, "min_guidance", c.min_guidance);
        read(path, cfg, "max_guidance", c.max_guidance);
        read(path, cfg, "noise_aug_strength", c.noise_aug_strength);
    } catch (const json::exception& e) {
        throw BundleError(path + ": model.config is incomplete (" + e.what() + "); re-export the bundle");
    }
    if (out.config.prediction_type != "v_prediction")
        throw BundleError(path + ": prediction_type " + out.config.prediction_type + " is not supported (the EDM sampler takes v_prediction)");

    static const char* kPrecisions[] = {"fp32", "fp16", "int8", "fp8"};
    if (std::find(std::begin(kPrecisions), std::end(kPrecisions), precision) == std::end(kPrecisions))
        throw BackendError("unknown precision '" + precision + "'; choose one of fp32, fp16, int8, fp8");
    const json& nets = m["networks"];
    std::string missing;
    for (const auto& name : kNetworks)
        if (!nets.contains(name)) missing += (missing.empty() ? "" : ", ") + name;
    if (!missing.empty()) {
        const json& src = m["model"].value("source", json());
        throw BundleError("bundle " + root + " lacks " + missing + "; re-export it with this toolkit (`python -m export.onnx --model " +
                          (src.is_string() && !src.get<std::string>().empty() ? src.get<std::string>() : "DIR") + " --out " + root + "`)");
    }
    std::vector<std::string> names = kNetworks;
    for (const auto& name : kOptionalNetworks)
        if (nets.contains(name)) names.push_back(name);
    for (const auto& name : names) {
        const json& entry = nets[name];
        try {
            const json& variants = entry.at("variants");
            const std::string chosen = variants.contains(precision) ? precision : "fp32";
            if (!variants.contains(chosen)) {
                std::string got;
                for (auto it = variants.begin(); it != variants.end(); ++it) got += (got.empty() ? "" : ", ") + it.key();
                throw BundleError("bundle " + root + " has no " + chosen + " graph for '" + name + "' (it has " + (got.empty() ? "none" : got) +
                                  "); export it with `python -m export.onnx --out " + root + " --precision " + chosen + "`");
            }
            const json& v = variants[chosen];
            NetworkInfo n;
            n.name = name;
            n.precision = chosen;
            const std::string file = v.at("file").get<std::string>();
            n.file = join(root, file);
            if (!is_file(n.file))
                throw BundleError("bundle " + root + ": " + file + " (network '" + name + "', " + chosen + ") is missing; re-export the bundle");
            if (v.contains("external_data") && v["external_data"].is_string()) {
                const std::string data = v["external_data"].get<std::string>();
                if (!is_file(join(root, data)))
                    throw BundleError("bundle " + root + ": " + data + " (network '" + name + "', " + chosen + ") is missing; re-export the bundle");
            }
            if (v.contains("sha256") && v["sha256"].is_string()) n.sha256 = v["sha256"].get<std::string>();
            n.inputs = tensors(entry.at("inputs"));
            n.outputs = tensors(entry.at("outputs"));
            out.networks.push_back(std::move(n));
        } catch (const json::exception& e) {
            throw BundleError(path + ": network '" + name + "' is incomplete (" + e.what() + "); re-export the bundle");
        }
    }
    return out;
}

void verify_checksum(const NetworkInfo& n) {
    if (!n.sha256.empty() && sha256_file(n.file) != n.sha256)
        throw BundleError(n.file + " does not match the sha256 in the manifest (changed or corrupt); re-export the bundle");
}

void verify_checksums(const Manifest& manifest) {
    for (const auto& n : manifest.networks) verify_checksum(n);
}

void check_resolution(const ModelConfig& config, int height, int width) {
    const int m = config.pixel_multiple();
    if (height < m || width < m || height % m || width % m) {
        auto nearest = [m](int v) { return std::max(m, int(std::nearbyint(double(v) / m)) * m); };
        throw InputError("height " + std::to_string(height) + " x width " + std::to_string(width) +
                         " is not supported: both must be positive multiples of " + std::to_string(m) + " (VAE downsamples by " +
                         std::to_string(config.vae_scale_factor) + ", the UNet by " + std::to_string(config.unet_downsample) +
                         " more); try " + std::to_string(nearest(height)) + " x " + std::to_string(nearest(width)));
    }
}

}  // namespace sfv::detail
