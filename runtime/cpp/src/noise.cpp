#include "noise.hpp"

#include <cmath>

namespace sfv::detail {

std::uint64_t splitmix64(std::uint64_t x) {
    std::uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

namespace {

float box_muller(std::uint64_t base, std::uint64_t off, std::uint64_t i) {
    const double two_m53 = 0x1p-53;
    std::uint64_t a = splitmix64(base + off + 2 * i), b = splitmix64(base + off + 2 * i + 1);
    double u1 = double((a >> 11) + 1) * two_m53;  // (0, 1]: log never sees 0
    double u2 = double(b >> 11) * two_m53;        // [0, 1)
    return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

}  // namespace

float normal_draw(std::int64_t seed, NoiseStream stream, std::uint64_t i) {
    return box_muller(splitmix64(std::uint64_t(seed)), std::uint64_t(stream) << 40, i);
}

std::vector<float> normal_noise(std::int64_t seed, NoiseStream stream, std::size_t n) {
    std::uint64_t base = splitmix64(std::uint64_t(seed)), off = std::uint64_t(stream) << 40;
    std::vector<float> out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = box_muller(base, off, i);
    return out;
}

}  // namespace sfv::detail
