// Minimal NumPy .npy / .npz (stored, as np.savez writes) reading and .npy writing, for the
// example program's --noise, --out clip.npy and --save-latents. Throws sfv::InputError.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace npy {

struct Array {
    std::string dtype;               ///< numpy descr without byte order: "f4", "u1", "f8", ...
    std::vector<std::int64_t> shape;
    std::vector<std::uint8_t> bytes; ///< C order, little endian
    std::size_t size() const;
    std::vector<float> as_float32() const;  ///< f4 only, else InputError
};

/// Parse a .npy image held in memory (`what` names it in errors).
Array parse(const std::uint8_t* data, std::size_t size, const std::string& what);
Array load_npy(const std::string& path);
/// Every array of an uncompressed .npz, keyed by name without ".npy".
std::map<std::string, Array> load_npz(const std::string& path);

/// Write an array atomically (temp file beside `path`, then rename).
void save(const std::string& path, const std::string& descr, const std::vector<std::int64_t>& shape, const void* data, std::size_t bytes);

}  // namespace npy
