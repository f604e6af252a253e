// SHA-256 (FIPS 180-4) of a byte stream or a file, as lowercase hex: the manifest's checksums.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sfv::detail {

class Sha256 {
  public:
    Sha256();
    void update(const void* data, std::size_t size);
    std::string hexdigest();  ///< finishes the hash; call once

  private:
    void block(const std::uint8_t* p);
    std::uint32_t h_[8];
    std::uint8_t buf_[64];
    std::size_t used_ = 0;
    std::uint64_t total_ = 0;
};

/// Hex digest of a file's bytes (OpenSSL's where the build found it, unless `portable`);
/// throws std::runtime_error if it cannot be read.
std::string sha256_file(const std::string& path, bool portable = false);

}  // namespace sfv::detail
