// One ONNX Runtime session per bundle network: providers by option, the graph's signature checked
// against the manifest, float32/uint8 feeds (converted for fp16 graphs) and float32 outputs.
// run() and run_into() are const and keep their state per call: several threads may run one
// Session at once (ONNX Runtime allows concurrent Run on a session). ONNX Runtime's exceptions
// never leave this class: they become BackendError with ONNX Runtime's message.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bundle.hpp"
#include "sfv/runtime.hpp"

namespace sfv::detail {

/// An input tensor fed by pointer (not owned), float32 or uint8.
struct Feed {
    std::string name;
    std::vector<std::int64_t> shape;
    const float* f32 = nullptr;
    const std::uint8_t* u8 = nullptr;
};

class Session {
  public:
    Session(const NetworkInfo& network, const RuntimeOptions& options);
    ~Session();
    /// Run and return the (single) output as float32, with its shape in `shape`.
    std::vector<float> run(const std::vector<Feed>& feeds, std::vector<std::int64_t>* shape = nullptr) const;
    /// Run with the (single) float32 output written into the caller's buffer `out` of `shape`
    /// (ONNX Runtime writes there directly for a float32 graph output: no allocation, no copy).
    void run_into(const std::vector<Feed>& feeds, float* out, const std::vector<std::int64_t>& shape) const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sfv::detail
