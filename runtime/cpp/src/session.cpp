#include "session.hpp"

#include <algorithm>
#include <numeric>
#include <set>

#include <onnxruntime_cxx_api.h>

#include "ort_cache.hpp"

namespace sfv::detail {
namespace {

Ort::Env& env() {
    // One environment per process, as ONNX Runtime asks; created on first use.
    static Ort::Env e(ORT_LOGGING_LEVEL_WARNING, "sfv_runtime");
    return e;
}

const char* provider_name(Provider p) {
    switch (p) {
        case Provider::cuda: return "CUDAExecutionProvider";
        case Provider::tensorrt: return "TensorrtExecutionProvider";
        default: return "CPUExecutionProvider";
    }
}

/// GPU providers: appended in priority order (TensorRT, then CUDA for the nodes it leaves).
void append_providers(Ort::SessionOptions& so, const RuntimeOptions& options) {
    const OrtApi& api = Ort::GetApi();
    const std::string device = std::to_string(options.device_id);
    try {
        if (options.provider == Provider::tensorrt) {
            OrtTensorRTProviderOptionsV2* trt = nullptr;
            Ort::ThrowOnError(api.CreateTensorRTProviderOptions(&trt));
            std::unique_ptr<OrtTensorRTProviderOptionsV2, void (*)(OrtTensorRTProviderOptionsV2*)> guard(trt, api.ReleaseTensorRTProviderOptions);
            // Engine cache: TensorRT builds each engine once and reloads it at the next start
            // (keyed by graph, GPU and TensorRT version); the timing cache speeds up rebuilds.
            const char* keys[] = {"device_id", "trt_engine_cache_enable", "trt_engine_cache_path", "trt_timing_cache_enable", "trt_timing_cache_path"};
            const char* values[] = {device.c_str(), "1", options.trt_cache_dir.c_str(), "1", options.trt_cache_dir.c_str()};
            Ort::ThrowOnError(api.UpdateTensorRTProviderOptions(trt, keys, values, options.trt_cache_dir.empty() ? 1 : 5));
            so.AppendExecutionProvider_TensorRT_V2(*trt);
        }
        if (options.provider == Provider::tensorrt || options.provider == Provider::cuda) {
            OrtCUDAProviderOptionsV2* cuda = nullptr;
            Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
            std::unique_ptr<OrtCUDAProviderOptionsV2, void (*)(OrtCUDAProviderOptionsV2*)> guard(cuda, api.ReleaseCUDAProviderOptions);
            const char* keys[] = {"device_id"};
            const char* values[] = {device.c_str()};
            Ort::ThrowOnError(api.UpdateCUDAProviderOptions(cuda, keys, values, 1));
            so.AppendExecutionProvider_CUDA_V2(*cuda);
        }
    } catch (const Ort::Exception& e) {
        throw BackendError(std::string("ONNX Runtime could not start ") + provider_name(options.provider) + ": " + e.what() +
                           "; link an ONNX Runtime build with CUDA/TensorRT (onnxruntime-gpu) on a machine with an NVIDIA GPU, "
                           "or use Provider::cpu");
    }
}

std::string names(const std::vector<std::string>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", '" : "'") + v[i] + "'";
    return s + "]";
}

}  // namespace

struct Session::Impl {
    std::string file;
    Ort::Session session{nullptr};
    std::vector<std::string> input_names, output_names;
    std::vector<ONNXTensorElementDataType> input_types;
    ONNXTensorElementDataType output_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
};

Session::Session(const NetworkInfo& network, const RuntimeOptions& options) : impl_(new Impl) {
    impl_->file = network.file;
    Ort::SessionOptions so;
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    if (options.threads > 0) so.SetIntraOpNumThreads(options.threads);
    // Exact u8u8 integer GEMM on x86-64 CPUs without VNNI, where the u8s8 kernels saturate
    // (the Python engines set the same entry: engines/ort_engine.py EXACT_INT8_GEMM).
    so.AddConfigEntry("session.x64quantprecision", "1");
    // Idle threads spin only where the next call is this session's own (the sampler's UNet loop);
    // elsewhere they would take the next network's cores (engines/ort_engine.py SPINNING_NETWORKS).
    if (network.name != "unet") so.AddConfigEntry("session.intra_op.allow_spinning", "0");
    append_providers(so, options);
    try {
        // CPU sessions start from ONNX Runtime's optimised graph kept in the bundle's ort-cache (ort_cache.hpp).
        impl_->session = options.provider == Provider::cpu
                             ? open_cached_session(env(), network.file, network.sha256, so, default_ort_cache_dir(network.file))
                             : Ort::Session(env(), network.file.c_str(), so);
    } catch (const Ort::Exception& e) {
        std::string what = e.what();
        std::string lower(what);
        std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
        if (lower.find("provider") != std::string::npos)
            throw BackendError(std::string("ONNX Runtime could not start ") + provider_name(options.provider) + ": " + what);
        throw BundleError("ONNX Runtime cannot load " + network.file + " (" + what + "); re-export the bundle");
    }
    Ort::AllocatorWithDefaultOptions alloc;
    auto& s = impl_->session;
    for (std::size_t i = 0; i < s.GetInputCount(); ++i) {
        impl_->input_names.push_back(s.GetInputNameAllocated(i, alloc).get());
        impl_->input_types.push_back(s.GetInputTypeInfo(i).GetTensorTypeAndShapeInfo().GetElementType());
    }
    for (std::size_t i = 0; i < s.GetOutputCount(); ++i) impl_->output_names.push_back(s.GetOutputNameAllocated(i, alloc).get());
    if (s.GetOutputCount() > 0) impl_->output_type = s.GetOutputTypeInfo(0).GetTensorTypeAndShapeInfo().GetElementType();

    std::vector<std::string> want_in, want_out;
    for (const auto& t : network.inputs) want_in.push_back(t.name);
    for (const auto& t : network.outputs) want_out.push_back(t.name);
    auto sorted = [](std::vector<std::string> v) { std::sort(v.begin(), v.end()); return v; };
    if (sorted(want_in) != sorted(impl_->input_names) || sorted(want_out) != sorted(impl_->output_names))
        throw BundleError(network.file + " takes " + names(sorted(impl_->input_names)) + " -> " + names(impl_->output_names) +
                          " but the manifest says " + names(want_in) + " -> " + names(want_out) + "; re-export the bundle");
}

Session::~Session() = default;

namespace {

/// The input values for `feeds` (fp16 graphs get converted copies, kept alive in `halves`).
std::vector<Ort::Value> make_inputs(const std::vector<Feed>& feeds, const std::vector<std::string>& input_names,
                                    const std::vector<ONNXTensorElementDataType>& input_types, const std::string& file,
                                    const Ort::MemoryInfo& cpu, std::vector<std::vector<Ort::Float16_t>>& halves,
                                    std::vector<const char*>& in_names) {
    std::vector<Ort::Value> values;
    halves.reserve(feeds.size());
    for (const Feed& f : feeds) {
        auto it = std::find(input_names.begin(), input_names.end(), f.name);
        if (it == input_names.end())
            throw BundleError(file + " has no input '" + f.name + "' (it takes " + names(input_names) +
                              "); re-export the bundle with this version of the toolkit");
        const auto type = input_types[it - input_names.begin()];
        const std::size_t n = std::accumulate(f.shape.begin(), f.shape.end(), std::size_t(1), std::multiplies<>());
        if (f.u8) {
            values.push_back(Ort::Value::CreateTensor<std::uint8_t>(cpu, const_cast<std::uint8_t*>(f.u8), n, f.shape.data(), f.shape.size()));
        } else if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
            halves.emplace_back(f.f32, f.f32 + n);
            values.push_back(Ort::Value::CreateTensor<Ort::Float16_t>(cpu, halves.back().data(), n, f.shape.data(), f.shape.size()));
        } else {
            values.push_back(Ort::Value::CreateTensor<float>(cpu, const_cast<float*>(f.f32), n, f.shape.data(), f.shape.size()));
        }
        in_names.push_back(f.name.c_str());
    }
    return values;
}

BackendError run_failed(const std::string& file, const Ort::Exception& e) {
    std::string what = e.what();  // ONNX Runtime's messages may span lines: errors here are one line
    for (std::size_t p; (p = what.find('\n')) != std::string::npos;) what.replace(p, 1, p + 1 < what.size() ? "; " : "");
    return BackendError("ONNX Runtime failed running " + file + ": " + what);
}

}  // namespace

std::vector<float> Session::run(const std::vector<Feed>& feeds, std::vector<std::int64_t>* shape) const {
    try {
        std::vector<std::vector<Ort::Float16_t>> halves;
        std::vector<const char*> in_names;
        auto values = make_inputs(feeds, impl_->input_names, impl_->input_types, impl_->file, impl_->cpu, halves, in_names);
        const char* out_name = impl_->output_names[0].c_str();
        auto out = impl_->session.Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(), values.size(), &out_name, 1);
        auto info = out[0].GetTensorTypeAndShapeInfo();
        const std::size_t n = info.GetElementCount();
        if (shape) *shape = info.GetShape();
        if (info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
            const Ort::Float16_t* p = out[0].GetTensorData<Ort::Float16_t>();
            std::vector<float> r(n);
            for (std::size_t i = 0; i < n; ++i) r[i] = p[i].ToFloat();
            return r;
        }
        const float* p = out[0].GetTensorData<float>();
        return std::vector<float>(p, p + n);
    } catch (const Ort::Exception& e) {
        throw run_failed(impl_->file, e);
    }
}

void Session::run_into(const std::vector<Feed>& feeds, float* out, const std::vector<std::int64_t>& shape) const {
    if (impl_->output_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {  // an fp16 graph: converted from ONNX Runtime's buffer
        std::vector<std::int64_t> got;
        const std::vector<float> r = run(feeds, &got);
        if (got != shape) throw BundleError(impl_->file + " gave an output of another shape than its inputs imply; re-export the bundle");
        std::copy(r.begin(), r.end(), out);
        return;
    }
    try {
        std::vector<std::vector<Ort::Float16_t>> halves;
        std::vector<const char*> in_names;
        auto values = make_inputs(feeds, impl_->input_names, impl_->input_types, impl_->file, impl_->cpu, halves, in_names);
        const std::size_t n = std::accumulate(shape.begin(), shape.end(), std::size_t(1), std::multiplies<>());
        Ort::Value result = Ort::Value::CreateTensor<float>(impl_->cpu, out, n, shape.data(), shape.size());
        const char* out_name = impl_->output_names[0].c_str();
        impl_->session.Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(), values.size(), &out_name, &result, 1);
    } catch (const Ort::Exception& e) {
        throw run_failed(impl_->file, e);
    }
}

}  // namespace sfv::detail
