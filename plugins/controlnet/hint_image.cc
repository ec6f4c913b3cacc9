#include "hint_image.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

namespace atelier::controlnet {
namespace {

int RoundHalfEven(double v) { return static_cast<int>(std::nearbyint(v)); }

size_t UniqueColours(const cv::Mat& x) {
  std::set<std::tuple<float, float, float>> colours;
  for (int y = 0; y < x.rows; ++y) {
    for (int i = 0; i < x.cols; ++i) {
      if (x.depth() == CV_8U) {
        const auto& p = x.at<cv::Vec3b>(y, i);
        colours.emplace(p[0], p[1], p[2]);
      } else {
        const auto& p = x.at<cv::Vec3f>(y, i);
        colours.emplace(p[0], p[1], p[2]);
      }
      if (colours.size() >= 200) return colours.size();
    }
  }
  return colours.size();
}

// lvminthin.nake_nms: keep a pixel where it is the maximum along one of the four line directions.
cv::Mat NakeNms(const cv::Mat& x) {
  const cv::Mat kernels[] = {(cv::Mat_<uint8_t>(3, 3) << 0, 0, 0, 1, 1, 1, 0, 0, 0),
                             (cv::Mat_<uint8_t>(3, 3) << 0, 1, 0, 0, 1, 0, 0, 1, 0),
                             (cv::Mat_<uint8_t>(3, 3) << 1, 0, 0, 0, 1, 0, 0, 0, 1),
                             (cv::Mat_<uint8_t>(3, 3) << 0, 0, 1, 0, 1, 0, 1, 0, 0)};
  cv::Mat y = cv::Mat::zeros(x.size(), x.type());
  for (const auto& k : kernels) {
    cv::Mat d;
    cv::dilate(x, d, k);
    x.copyTo(y, d == x);
  }
  return y;
}

std::vector<cv::Mat> Rotations(const std::vector<std::array<int, 9>>& raw) {
  // [rot90(r, k) for k in 0..3 for r in raw]: counter-clockwise rotations.
  std::vector<cv::Mat> out;
  for (int k = 0; k < 4; ++k) {
    for (const auto& r : raw) {
      cv::Mat m(3, 3, CV_32S);
      for (int i = 0; i < 9; ++i) m.at<int>(i / 3, i % 3) = r[i];
      for (int t = 0; t < k; ++t) cv::rotate(m, m, cv::ROTATE_90_COUNTERCLOCKWISE);
      out.push_back(m);
    }
  }
  return out;
}

bool ThinOnce(cv::Mat& x, const std::vector<cv::Mat>& kernels) {
  bool done = true;
  for (const auto& k : kernels) {
    cv::Mat hit;
    cv::morphologyEx(x, hit, cv::MORPH_HITMISS, k);
    cv::Mat matched = hit > 127;
    if (cv::countNonZero(matched) > 0) {
      x.setTo(0, matched);
      done = false;
    }
  }
  return done;
}

cv::Mat LvminThin(cv::Mat y, bool prunings) {
  static const std::vector<cv::Mat> kThin =
      Rotations({{-1, -1, -1, 0, 1, 0, 1, 1, 1}, {0, -1, -1, 1, 1, -1, 0, 1, 0}});
  static const std::vector<cv::Mat> kPrune =
      Rotations({{-1, -1, -1, -1, 1, -1, 0, 0, -1}, {-1, -1, -1, -1, 1, -1, -1, 0, 0}});
  for (int i = 0; i < 32; ++i) {
    if (ThinOnce(y, kThin)) break;
  }
  if (prunings) ThinOnce(y, kPrune);
  return y;
}

}  // namespace

cv::Mat HighQualityResize(const cv::Mat& input, int width, int height) {
  cv::Mat x = input;
  cv::Mat mask;
  if (x.channels() == 4) {
    std::vector<cv::Mat> ch;
    cv::split(x, ch);
    mask = ch[3];
    cv::merge(std::vector<cv::Mat>{ch[0], ch[1], ch[2]}, x);
  }
  cv::Mat y = x;
  if (x.rows != height || x.cols != width) {
    const long long new_area = static_cast<long long>(width) * height, old_area = static_cast<long long>(x.rows) * x.cols;
    const bool smaller = new_area < old_area, bigger = new_area > old_area;
    const size_t unique = UniqueColours(x);
    bool binary = false, one_pixel_edge = false;
    if (unique == 2) {
      double lo = 0, hi = 0;
      cv::minMaxLoc(x.reshape(1), &lo, &hi);
      binary = lo < 16 && hi > 240;
      if (binary) {
        cv::Mat xc;
        const cv::Mat k = cv::Mat::ones(3, 3, CV_8U);
        cv::erode(x, xc, k);
        cv::dilate(xc, xc, k);
        const cv::Mat thinner = xc < x, bright = x > 127;
        const int one_pixel = cv::countNonZero(thinner.reshape(1));
        const int all_edges = cv::countNonZero(bright.reshape(1));
        one_pixel_edge = one_pixel * 2 > all_edges;
      }
    }
    int interpolation = cv::INTER_CUBIC;
    if (unique > 2 && unique < 200) {
      interpolation = cv::INTER_NEAREST;
    } else if (smaller) {
      interpolation = cv::INTER_AREA;
    }
    cv::resize(x, y, cv::Size(width, height), 0, 0, interpolation);
    if (!mask.empty()) cv::resize(mask, mask, cv::Size(width, height), 0, 0, interpolation);
    if (binary) {
      cv::Mat f, gray;
      y.convertTo(f, CV_32F);
      cv::transform(f, gray, cv::Matx13f(1.0f / 3, 1.0f / 3, 1.0f / 3));
      cv::Mat g8(gray.size(), CV_8U);
      for (int r = 0; r < gray.rows; ++r) {
        for (int c = 0; c < gray.cols; ++c) {
          g8.at<uint8_t>(r, c) = static_cast<uint8_t>(std::clamp(gray.at<float>(r, c), 0.0f, 255.0f));
        }
      }
      if (one_pixel_edge) {
        g8 = NakeNms(g8);
        cv::threshold(g8, g8, 0, 255, cv::THRESH_BINARY + cv::THRESH_OTSU);
        g8 = LvminThin(g8, bigger);
      } else {
        cv::threshold(g8, g8, 0, 255, cv::THRESH_BINARY + cv::THRESH_OTSU);
      }
      cv::cvtColor(g8, y, cv::COLOR_GRAY2RGB);
      if (x.depth() == CV_32F) y.convertTo(y, CV_32F);
    }
  }
  if (!mask.empty()) {
    cv::Mat m = cv::Mat::zeros(mask.size(), y.type() == CV_32FC3 ? CV_32F : CV_8U);
    m.setTo(255, mask > 127);
    std::vector<cv::Mat> ch;
    cv::split(y, ch);
    ch.push_back(m);
    cv::merge(ch, y);
  }
  return y;
}

cv::Mat FitDetectedMap(const cv::Mat& input, ResizeMode mode, int h, int w) {
  cv::Mat m = input;
  if (m.channels() == 4 && m.depth() == CV_8U) m.convertTo(m, CV_32F);
  if (mode == ResizeMode::kJustResize) return HighQualityResize(m, w, h);
  const double old_h = m.rows, old_w = m.cols;
  const double k0 = h / old_h, k1 = w / old_w;
  if (mode == ResizeMode::kResizeAndFill) {
    const double k = std::min(k0, k1);
    // Per-channel median of the border pixels (corners counted twice), cast to the map's type.
    std::vector<std::vector<float>> border(m.channels());
    auto add = [&](int y, int x) {
      for (int c = 0; c < m.channels(); ++c) {
        border[c].push_back(m.depth() == CV_8U ? m.ptr<uint8_t>(y)[x * m.channels() + c]
                                               : m.ptr<float>(y)[x * m.channels() + c]);
      }
    };
    for (int x = 0; x < m.cols; ++x) add(0, x);
    for (int x = 0; x < m.cols; ++x) add(m.rows - 1, x);
    for (int y = 0; y < m.rows; ++y) add(y, 0);
    for (int y = 0; y < m.rows; ++y) add(y, m.cols - 1);
    cv::Scalar colour;
    for (int c = 0; c < m.channels(); ++c) {
      auto& v = border[c];
      std::sort(v.begin(), v.end());
      const size_t n = v.size();
      double med = n % 2 ? v[n / 2] : (static_cast<double>(v[n / 2 - 1]) + v[n / 2]) / 2.0;
      if (m.depth() == CV_8U) med = std::floor(med);
      colour[c] = med;
    }
    if (m.channels() == 4) colour[3] = 255;
    cv::Mat bg(h, w, m.type(), colour);
    cv::Mat r = HighQualityResize(m, RoundHalfEven(old_w * k), RoundHalfEven(old_h * k));
    const int ph = std::max(0, (h - r.rows) / 2), pw = std::max(0, (w - r.cols) / 2);
    r(cv::Rect(0, 0, std::min(r.cols, w - pw), std::min(r.rows, h - ph))).copyTo(bg(cv::Rect(pw, ph, std::min(r.cols, w - pw), std::min(r.rows, h - ph))));
    return bg;
  }
  const double k = std::max(k0, k1);
  cv::Mat r = HighQualityResize(m, RoundHalfEven(old_w * k), RoundHalfEven(old_h * k));
  const int ph = std::max(0, (r.rows - h) / 2), pw = std::max(0, (r.cols - w) / 2);
  return r(cv::Rect(pw, ph, std::min(w, r.cols - pw), std::min(h, r.rows - ph))).clone();
}

int PixelPerfectResolution(int raw_h, int raw_w, int target_h, int target_w, ResizeMode mode) {
  const double k0 = static_cast<double>(target_h) / raw_h, k1 = static_cast<double>(target_w) / raw_w;
  const double k = mode == ResizeMode::kResizeAndFill ? std::min(k0, k1) : std::max(k0, k1);
  return RoundHalfEven(k * std::min(raw_h, raw_w));
}

at::Tensor HintTensor(const cv::Mat& fitted) {
  cv::Mat f;
  fitted.convertTo(f, CV_32F, 1.0 / 255.0);
  const int c = f.channels();
  at::Tensor t = at::from_blob(f.data, {f.rows, f.cols, c}, at::kFloat).permute({2, 0, 1}).unsqueeze(0).clone();
  if (c == 4) {
    at::Tensor rgb = t.narrow(1, 0, 3), m = (t.narrow(1, 3, 1) > 0.5).to(at::kFloat);
    t = rgb * (1 - m) - m;
  }
  return t.contiguous();
}

cv::Mat DisplayMap(const cv::Mat& fitted) {
  cv::Mat out;
  if (fitted.channels() == 4) {
    std::vector<cv::Mat> ch;
    cv::split(fitted, ch);
    cv::Mat rgb;
    cv::merge(std::vector<cv::Mat>{ch[0], ch[1], ch[2]}, rgb);
    rgb.convertTo(out, CV_8U);
    out.setTo(cv::Scalar::all(0), ch[3] > 127);
    return out;
  }
  fitted.convertTo(out, CV_8U);
  return out;
}

cv::Mat DisplayRgb(const cv::Mat& fitted) {
  cv::Mat rgb = fitted;
  if (fitted.channels() == 4) {
    std::vector<cv::Mat> ch;
    cv::split(fitted, ch);
    cv::merge(std::vector<cv::Mat>{ch[0], ch[1], ch[2]}, rgb);
  }
  cv::Mat out;
  rgb.convertTo(out, CV_8U);
  return out;
}

}  // namespace atelier::controlnet
