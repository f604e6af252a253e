#include "resample.hpp"

#include <algorithm>
#include <cmath>

namespace sfv::detail {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // 8-bit result, 2 bits for overshoot of negative lobes
constexpr double kSupport = 3.0;             // Lanczos-3

double sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return std::sin(x) / x;
}

double lanczos(double x) { return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0; }

/// One axis: per output index, the first input index, the tap count and fixed-point taps.
struct Coeffs {
    int ksize = 0;
    std::vector<int> bounds;  // [out * 2]: xmin, count
    std::vector<std::int32_t> k;  // [out * ksize]
};

Coeffs precompute(int in_size, int out_size) {
    // Pillow passes the box (0, 0, in_w, in_h) as floats: in0 = 0, in1 = in_size.
    const float in0 = 0.0f, in1 = float(in_size);
    double scale = double(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = kSupport * filterscale;
    Coeffs c;
    c.ksize = int(std::ceil(support)) * 2 + 1;
    c.bounds.resize(std::size_t(out_size) * 2);
    c.k.assign(std::size_t(out_size) * c.ksize, 0);
    std::vector<double> w(c.ksize);
    double inv_filterscale = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; ++xx) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        int xmin = int(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = int(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; ++x) {
            w[x] = lanczos((x + xmin - center + 0.5) * inv_filterscale);
            ww += w[x];
        }
        for (int x = 0; x < xmax; ++x) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            // normalize_coeffs_8bpc: round half away from zero into fixed point
            c.k[std::size_t(xx) * c.ksize + x] =
                v < 0 ? int(-0.5 + v * (1 << kPrecisionBits)) : int(0.5 + v * (1 << kPrecisionBits));
        }
        c.bounds[2 * xx] = xmin;
        c.bounds[2 * xx + 1] = xmax;
    }
    return c;
}

inline std::uint8_t clip8(int ss) {
    int v = ss >> kPrecisionBits;  // arithmetic shift, as Pillow's lookup index
    return std::uint8_t(std::min(255, std::max(0, v)));
}

/// One horizontal pass: rows [row0, row0 + rows) of `in` (width in_w) -> `rows` rows of width out_w.
std::vector<std::uint8_t> horizontal(const std::uint8_t* in, int in_w, int row0, int rows, const Coeffs& c, int out_w) {
    std::vector<std::uint8_t> out(std::size_t(out_w) * rows * 3);
    for (int yy = 0; yy < rows; ++yy) {
        const std::uint8_t* line = in + std::size_t(yy + row0) * in_w * 3;
        std::uint8_t* o = out.data() + std::size_t(yy) * out_w * 3;
        for (int xx = 0; xx < out_w; ++xx) {
            const int xmin = c.bounds[2 * xx], n = c.bounds[2 * xx + 1];
            const std::int32_t* k = &c.k[std::size_t(xx) * c.ksize];
            for (int ch = 0; ch < 3; ++ch) {
                int ss = 1 << (kPrecisionBits - 1);
                for (int x = 0; x < n; ++x) ss += line[(x + xmin) * 3 + ch] * k[x];
                o[xx * 3 + ch] = clip8(ss);
            }
        }
    }
    return out;
}

/// One vertical pass over an image of width w: -> out_h rows, row bounds relative to `in`.
std::vector<std::uint8_t> vertical(const std::uint8_t* in, int w, const Coeffs& c, int out_h) {
    std::vector<std::uint8_t> out(std::size_t(w) * out_h * 3);
    for (int yy = 0; yy < out_h; ++yy) {
        const int ymin = c.bounds[2 * yy], n = c.bounds[2 * yy + 1];
        const std::int32_t* k = &c.k[std::size_t(yy) * c.ksize];
        std::uint8_t* line = out.data() + std::size_t(yy) * w * 3;
        for (int xx = 0; xx < w * 3; ++xx) {
            int ss = 1 << (kPrecisionBits - 1);
            for (int y = 0; y < n; ++y) ss += in[std::size_t(y + ymin) * w * 3 + xx] * k[y];
            line[xx] = clip8(ss);
        }
    }
    return out;
}

}  // namespace

std::vector<std::uint8_t> resize_lanczos_rgb8(const std::uint8_t* in, int in_w, int in_h, int out_w, int out_h) {
    const bool need_h = out_w != in_w, need_v = out_h != in_h;
    if (!need_h && !need_v) return std::vector<std::uint8_t>(in, in + std::size_t(in_w) * in_h * 3);
    if (!need_h) return vertical(in, in_w, precompute(in_h, out_h), out_h);
    Coeffs hor = precompute(in_w, out_w);
    if (!need_v) return horizontal(in, in_w, 0, in_h, hor, out_w);
    Coeffs vert = precompute(in_h, out_h);
    // Pillow >= 13: when the height shrinks more than twice as much as the width, the vertical
    // pass runs first (fewer rows for the horizontal pass). The order changes the uint8 rounding.
    const bool horizontal_first = !((in_h - out_h) > 0 && (in_h - out_h) > (in_w - out_w) * 2);
    if (!horizontal_first) {
        auto tmp = vertical(in, in_w, vert, out_h);
        return horizontal(tmp.data(), in_w, 0, out_h, hor, out_w);
    }
    // Horizontal pass over the rows the vertical pass reads only.
    const int y_first = vert.bounds[0];
    const int y_last = vert.bounds[2 * out_h - 2] + vert.bounds[2 * out_h - 1];
    for (int i = 0; i < out_h; ++i) vert.bounds[2 * i] -= y_first;
    auto tmp = horizontal(in, in_w, y_first, y_last - y_first, hor, out_w);
    return vertical(tmp.data(), out_w, vert, out_h);
}

}  // namespace sfv::detail
