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

}  // namespace

std::vector<std::uint8_t> resize_lanczos_rgb8(const std::uint8_t* in, int in_w, int in_h, int out_w, int out_h) {
    const bool need_h = out_w != in_w, need_v = out_h != in_h;
    Coeffs vert = precompute(in_h, out_h);
    const int y_first = vert.bounds[0];
    const int y_last = vert.bounds[2 * out_h - 2] + vert.bounds[2 * out_h - 1];

    std::vector<std::uint8_t> cur;  // the image the next pass reads
    int cur_w = in_w, cur_h = in_h;
    const std::uint8_t* src = in;
    if (need_h) {
        Coeffs hor = precompute(in_w, out_w);
        cur_h = y_last - y_first;
        cur_w = out_w;
        cur.resize(std::size_t(cur_w) * cur_h * 3);
        for (int yy = 0; yy < cur_h; ++yy) {
            const std::uint8_t* line = in + std::size_t(yy + y_first) * in_w * 3;
            std::uint8_t* out = cur.data() + std::size_t(yy) * cur_w * 3;
            for (int xx = 0; xx < out_w; ++xx) {
                const int xmin = hor.bounds[2 * xx], n = hor.bounds[2 * xx + 1];
                const std::int32_t* k = &hor.k[std::size_t(xx) * hor.ksize];
                for (int ch = 0; ch < 3; ++ch) {
                    int ss = 1 << (kPrecisionBits - 1);
                    for (int x = 0; x < n; ++x) ss += line[(x + xmin) * 3 + ch] * k[x];
                    out[xx * 3 + ch] = clip8(ss);
                }
            }
        }
        for (int i = 0; i < out_h; ++i) vert.bounds[2 * i] -= y_first;
        src = cur.data();
    }
    if (!need_v) {
        if (need_h) return cur;
        return std::vector<std::uint8_t>(in, in + std::size_t(in_w) * in_h * 3);
    }
    std::vector<std::uint8_t> out(std::size_t(cur_w) * out_h * 3);
    for (int yy = 0; yy < out_h; ++yy) {
        const int ymin = vert.bounds[2 * yy], n = vert.bounds[2 * yy + 1];
        const std::int32_t* k = &vert.k[std::size_t(yy) * vert.ksize];
        std::uint8_t* line = out.data() + std::size_t(yy) * cur_w * 3;
        for (int xx = 0; xx < cur_w * 3; ++xx) {
            int ss = 1 << (kPrecisionBits - 1);
            for (int y = 0; y < n; ++y) ss += src[std::size_t(y + ymin) * cur_w * 3 + xx] * k[y];
            line[xx] = clip8(ss);
        }
    }
    (void)cur_h;
    return out;
}

}  // namespace sfv::detail
