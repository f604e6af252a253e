// Pillow's LANCZOS resize of 8-bit RGB images, ported from Pillow's src/libImaging/Resample.c so
// that the VAE's view of the image is byte for byte what `PIL.Image.resize((w, h), LANCZOS)` gives
// (diffusers' VideoProcessor, and the Python runtime).
//
// Coefficients in double, normalised, then fixed point with PRECISION_BITS = 22; two passes through
// an intermediate uint8 image, in Pillow 13's order: horizontal first (over only the rows the
// vertical pass reads) unless the height shrinks more than twice as much as the width. Pillow
// before 13 always went horizontal first; the order changes a few rounding steps, so the Python
// runtime's Pillow must be >= 13 for byte equality (the unit test compares with the installed one).
#pragma once

#include <cstdint>
#include <vector>

namespace sfv::detail {

/// RGB8 [in_h, in_w, 3] -> RGB8 [out_h, out_w, 3]; a copy when the size is unchanged.
std::vector<std::uint8_t> resize_lanczos_rgb8(const std::uint8_t* in, int in_w, int in_h, int out_w, int out_h);

}  // namespace sfv::detail
