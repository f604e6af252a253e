// The pipeline behind the C API: a bundle's sessions and the generate() of one or several images.
// Stage order and every formula follow runtime/pipeline.py; see sampling.hpp. Exceptions derived
// from sfv::Error (and ONNX Runtime's, converted at the C boundary) say what went wrong.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bundle.hpp"
#include "sfv/runtime.hpp"

namespace sfv::detail {

class Session;

/// One generate call: the images (each becomes a clip), the options' scalar fields (their noise
/// and progress members are not read), per-image seeds and explicit noise, the progress callback.
struct Request {
    std::vector<ImageView> images;
    GenerateOptions options;
    std::vector<std::int64_t> seeds;   ///< per image; empty: options.seed + i
    std::vector<const Noise*> noise;   ///< per image (null: its seed); may be shorter than images
    sfv_progress_fn progress = nullptr;
    void* user_data = nullptr;
};

struct Batch {
    std::vector<Clip> clips;  ///< one per image; their `timings` are left empty
    Timings timings;          ///< the whole call's
};

/// A loaded bundle: manifest, model info, one session per network. generate() is const and keeps
/// its state per call, so several threads may call it at once.
class Engine {
  public:
    Engine(const std::string& bundle_dir, const RuntimeOptions& options);
    ~Engine();
    const ModelInfo& model() const { return info_; }
    /// Checks the options first (InputError), then runs every stage; Cancelled when the callback asks.
    Batch generate(const Request& request) const;

  private:
    const Session& session(const std::string& name) const { return *sessions_.at(name); }
    Manifest manifest_;
    ModelInfo info_;
    std::map<std::string, std::unique_ptr<Session>> sessions_;
};

}  // namespace sfv::detail
