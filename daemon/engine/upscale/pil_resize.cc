#include "engine/upscale/pil_resize.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"

namespace atelier::engine {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr double kSupport = 3.0;

double Sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}
double Lanczos(double x) { return -3.0 <= x && x < 3.0 ? Sinc(x) * Sinc(x / 3) : 0.0; }

struct Coefficients {
  int ksize = 0;
  std::vector<int> bounds;  // per output pixel: first input index, count
  std::vector<int32_t> k;   // per output pixel: ksize fixed-point weights
};

// Resample.c precompute_coeffs + normalize_coeffs_8bpc.
Coefficients Precompute(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = kSupport * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<size_t>(out_size) * 2);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> kk(static_cast<size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      kk[static_cast<size_t>(x)] = Lanczos((x + xmin - center + 0.5) * ss);
      ww += kk[static_cast<size_t>(x)];
    }
    for (int x = 0; x < c.ksize; ++x) {
      double w = x < xmax ? kk[static_cast<size_t>(x)] : 0.0;
      if (x < xmax && ww != 0.0) w /= ww;
      c.k[static_cast<size_t>(xx) * c.ksize + x] =
          static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    c.bounds[static_cast<size_t>(xx) * 2] = xmin;
    c.bounds[static_cast<size_t>(xx) * 2 + 1] = xmax;
  }
  return c;
}

inline uint8_t Clip8(int64_t v) {
  if (v >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

}  // namespace

absl::StatusOr<at::Tensor> PilResizeLanczos(const at::Tensor& image, int64_t width, int64_t height) {
  if (image.scalar_type() != at::kByte || image.dim() != 3 || width < 1 || height < 1 || image.size(0) < 1 ||
      image.size(1) < 1) {
    return absl::InvalidArgumentError(absl::StrCat("Lanczos resize needs a uint8 [H, W, C] image and a size >= 1"));
  }
  const at::Tensor in = image.to(at::kCPU).contiguous();
  const int in_h = static_cast<int>(in.size(0)), in_w = static_cast<int>(in.size(1)), ch = static_cast<int>(in.size(2));
  const int out_w = static_cast<int>(width), out_h = static_cast<int>(height);
  if (in_w == out_w && in_h == out_h) return in.clone();
  const Coefficients vert = Precompute(in_h, out_h);
  // Only the source rows the vertical pass reads go through the horizontal one (as Pillow does).
  const int y_first = vert.bounds[0];
  const int y_last = vert.bounds[static_cast<size_t>(out_h) * 2 - 2] + vert.bounds[static_cast<size_t>(out_h) * 2 - 1];
  at::Tensor temp = in;
  int temp_rows_offset = 0;
  if (out_w != in_w) {
    const Coefficients horiz = Precompute(in_w, out_w);
    temp = at::empty({y_last - y_first, out_w, ch}, at::kByte);
    const uint8_t* src = in.data_ptr<uint8_t>();
    uint8_t* dst = temp.data_ptr<uint8_t>();
    at::parallel_for(0, y_last - y_first, 16, [&](int64_t begin, int64_t end) {
      for (int64_t yy = begin; yy < end; ++yy) {
        const uint8_t* row = src + (static_cast<size_t>(yy) + y_first) * in_w * ch;
        for (int xx = 0; xx < out_w; ++xx) {
          const int xmin = horiz.bounds[static_cast<size_t>(xx) * 2], xmax = horiz.bounds[static_cast<size_t>(xx) * 2 + 1];
          const int32_t* k = &horiz.k[static_cast<size_t>(xx) * horiz.ksize];
          for (int c = 0; c < ch; ++c) {
            int64_t ss = int64_t{1} << (kPrecisionBits - 1);
            for (int x = 0; x < xmax; ++x) ss += static_cast<int64_t>(row[(x + xmin) * ch + c]) * k[x];
            dst[(static_cast<size_t>(yy) * out_w + xx) * ch + c] = Clip8(ss);
          }
        }
      }
    });
    temp_rows_offset = y_first;
  }
  if (out_h == in_h) return temp;
  at::Tensor out = at::empty({out_h, out_w, ch}, at::kByte);
  const uint8_t* src = temp.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  at::parallel_for(0, out_h, 16, [&](int64_t begin, int64_t end) {
    for (int64_t yy = begin; yy < end; ++yy) {
      const int ymin = vert.bounds[static_cast<size_t>(yy) * 2] - temp_rows_offset;
      const int ymax = vert.bounds[static_cast<size_t>(yy) * 2 + 1];
      const int32_t* k = &vert.k[static_cast<size_t>(yy) * vert.ksize];
      for (int xx = 0; xx < out_w; ++xx) {
        for (int c = 0; c < ch; ++c) {
          int64_t ss = int64_t{1} << (kPrecisionBits - 1);
          for (int y = 0; y < ymax; ++y) {
            ss += static_cast<int64_t>(src[((static_cast<size_t>(y) + ymin) * out_w + xx) * ch + c]) * k[y];
          }
          dst[(static_cast<size_t>(yy) * out_w + xx) * ch + c] = Clip8(ss);
        }
      }
    }
  });
  return out;
}

}  // namespace atelier::engine
