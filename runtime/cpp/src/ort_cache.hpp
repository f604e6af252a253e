// ONNX Runtime's optimised graphs kept between starts: the Python runtime's cache
// (engines/ort_cache.py), with the same key text, entry layout and atomic writes, so that either
// runtime uses the entries the other wrote. An entry's key names the ONNX Runtime version, the
// machine and every CPU flag, the source graph's sha256, the optimisation level and the session
// entries that steer the optimiser: an entry made anywhere else has another key and is never used.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <string>
#include <vector>

namespace sfv::detail {

/// The CPU's flags as /proc/cpuinfo's first "flags" line lists them (contract/environment.py cpu_flags), sorted, unique.
std::vector<std::string> cpu_flags();

/// The key text of `graph_sha256`'s optimised graph on this machine (engines/ort_cache.py cache_key).
std::string ort_cache_key(const std::string& graph_sha256);

/// The entry directory's name: the first 32 hex digits of the key's sha256.
std::string ort_cache_entry_name(const std::string& key);

/// The default cache of a bundle graph: the ort-cache directory beside it (the bundle's graphs lie in its root).
std::string default_ort_cache_dir(const std::string& graph_file);

/// A CPU session of `graph_file`: from the cache entry of `graph_sha256` in `cache_dir` (optimisation
/// off), else optimised from the source while writing the entry (skipped where `cache_dir` is not
/// writable). An empty `cache_dir` or `graph_sha256` starts as before, without the cache.
/// `options` is not changed. `hit` (optional) tells whether the session came from the cache.
Ort::Session open_cached_session(Ort::Env& env, const std::string& graph_file, const std::string& graph_sha256,
                                 const Ort::SessionOptions& options, const std::string& cache_dir, bool* hit = nullptr);

}  // namespace sfv::detail
