// The documented host noise generator, shared with the Python runtime (runtime/noise.py).
//
// splitmix64 counter stream: base = splitmix64(uint64(seed)), raw(j) = splitmix64(base + j).
// Stream k (0: augmentation noise, 1: initial latents, 2 + i: the lcm sampler's noise after step i) starts at j = k << 40; element i of a
// C-ordered array uses raw(off + 2i) and raw(off + 2i + 1) in a Box-Muller transform computed in
// double and rounded to float. Any element can be drawn on its own (no sequential state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sfv::detail {

enum class NoiseStream : std::uint64_t { augmentation = 0, latents = 1 };

/// The stream of the consistency sampler's fresh noise after step i (runtime/noise.py: 2 + i).
inline NoiseStream step_stream(int i) { return NoiseStream(2 + std::uint64_t(i)); }

std::uint64_t splitmix64(std::uint64_t x);

/// Element i of stream k for a seed: a standard normal draw as float.
float normal_draw(std::int64_t seed, NoiseStream stream, std::uint64_t i);

/// The first n elements of a stream (flat C order of the tensor they fill).
std::vector<float> normal_noise(std::int64_t seed, NoiseStream stream, std::size_t n);

}  // namespace sfv::detail
