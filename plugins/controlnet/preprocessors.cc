#include "preprocessors.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace atelier::controlnet {
namespace {

// numpy's np.round / Python's round: half to even (the default FP rounding mode).
int RoundHalfEven(double v) { return static_cast<int>(std::nearbyint(v)); }

std::vector<ModuleInfo> BuildModules() {
  auto module = [&](std::string name, std::string label, int priority, std::vector<std::string> tags,
                    std::vector<Slider> sliders, bool res_visible = true) {
    ModuleInfo m;
    m.name = std::move(name);
    m.label = label.empty() ? m.name : std::move(label);
    m.priority = priority;
    m.tags = std::move(tags);
    m.sliders = std::move(sliders);
    m.resolution_visible = res_visible;
    return m;
  };
  std::vector<ModuleInfo> v;
  v.push_back(module("none", "", 10, {"InstructP2P"}, {}));
  // A hidden resolution slider is the extension's PreprocessorParameter(visible=False): 0.5 in [0, 1].
  const Slider hidden{"Resolution", 0.5, 0, 1, 0.01};
  ModuleInfo invert = module("invert", "invert (from white bg & black line)", 20, {"Canny", "Lineart", "Scribble", "MLSD"},
                             {}, false);
  invert.resolution = hidden;
  v.push_back(invert);
  v.push_back(module("canny", "", 100, {"Canny"},
                     {{"Low Threshold", 100, 1, 255, 1, true}, {"High Threshold", 200, 1, 255, 1, true}}));
  v.push_back(module("blur_gaussian", "", 0, {"Tile"}, {{"Sigma", 9.0, 0.01, 64.0, 0.01}}));
  v.push_back(module("scribble_xdog", "", 0, {"Scribble", "SparseCtrl"}, {{"XDoG Threshold", 32, 1, 64, 0.01, true}}));
  ModuleInfo shuffle = module("shuffle", "", 0, {"Shuffle"}, {}, false);
  shuffle.resolution = Slider{"Resolution", 512, 0, 1, 0.01, true};  // hidden: any processor_res becomes 512
  v.push_back(shuffle);
  ModuleInfo inpaint = module("inpaint", "inpaint_global_harmonious", 0, {"Inpaint"}, {}, false);
  inpaint.needs_mask = inpaint.inpaint = true;
  inpaint.resolution = hidden;
  v.push_back(inpaint);
  ModuleInfo inpaint_only = module("inpaint_only", "", 100, {"Inpaint"}, {}, false);
  inpaint_only.needs_mask = inpaint_only.inpaint = true;
  inpaint_only.resolution = hidden;
  v.push_back(inpaint_only);
  v.push_back(module("threshold", "", 0, {}, {{"Binarization Threshold", 127, 0, 255, 0.01, true}}));
  v.push_back(module("color", "t2ia_color_grid", 0, {"T2I-Adapter"}, {}));
  v.push_back(module("tile_resample", "", 100, {"Tile"}, {{"Down Sampling Rate", 1.0, 1.0, 8.0, 0.01}}));
  v.push_back(module("tile_colorfix", "", 0, {"Tile"}, {{"Variation", 8.0, 3.0, 32.0, 1.0}}));
  v.push_back(module("tile_colorfix+sharp", "", 0, {"Tile"},
                     {{"Variation", 8.0, 3.0, 32.0, 1.0}, {"Sharpness", 1.0, 0.0, 2.0, 0.01}}));
  v.push_back(module("recolor_luminance", "", 100, {"Recolor"}, {{"Gamma Correction", 1.0, 0.1, 2.0, 0.001}}));
  v.push_back(module("recolor_intensity", "", 0, {"Recolor"}, {{"Gamma Correction", 1.0, 0.1, 2.0, 0.001}}));
  v.push_back(module("lineart_standard", "lineart_standard (from white bg & black line)", 100, {"Lineart"}, {}));
  for (const char* r : {"reference_only", "reference_adain", "reference_adain+attn"}) {
    ModuleInfo m = module(r, "", std::string(r) == "reference_only" ? 100 : 0, {"Reference"},
                          {{"Style Fidelity (only for Balanced mode)", 0.5, 0.0, 1.0, 0.01}});
    m.model_free = true;
    v.push_back(m);
  }
  // module_list order: "none" first, then str(priority).zfill(8) + label descending.
  std::stable_sort(v.begin() + 1, v.end(), [](const ModuleInfo& a, const ModuleInfo& b) {
    auto key = [](const ModuleInfo& m) {
      std::string p = std::to_string(m.priority);
      return std::string(8 - std::min<size_t>(8, p.size()), '0') + p + m.label;
    };
    return key(a) > key(b);
  });
  return v;
}

const std::set<std::string>& NetworkModuleNames() {
  static const std::set<std::string> names = {
      "openpose", "openpose_face", "openpose_faceonly", "openpose_full", "openpose_hand", "dw_openpose_full",
      "animal_openpose", "densepose", "densepose_parula", "depth", "depth_midas", "depth_leres", "depth_leres++",
      "depth_zoe", "depth_anything", "depth_anything_v2", "depth_hand_refiner", "depth_marigold", "normal_bae",
      "normal_midas", "normal_dsine", "normal_map", "hed", "softedge_hed", "softedge_hedsafe", "softedge_pidinet",
      "softedge_pidisafe", "softedge_teed", "softedge_anyline", "te_hed", "pidinet", "pidinet_safe", "hed_safe",
      "lineart", "lineart_anime", "lineart_anime_denoise", "lineart_coarse", "lineart_realistic", "mlsd",
      "segmentation", "seg_ofade20k", "seg_ofcoco", "seg_ufade20k", "seg_anime_face", "anime_face_segment",
      "scribble_hed", "scribble_pidinet", "fake_scribble", "t2ia_sketch_pidi", "t2ia_style_clipvision",
      "clip_vision", "revision_clipvision", "revision_ignore_prompt", "ip-adapter_clip_sd15", "ip-adapter_clip_sdxl",
      "ip-adapter_clip_sdxl_plus_vith", "ip-adapter_face_id", "ip-adapter_face_id_plus", "ip-adapter-auto",
      "ip-adapter_pulid", "instant_id_face_embedding", "instant_id_face_keypoints", "inpaint_only+lama",
      "lama_inpaint", "mediapipe_face", "mobile_sam", "recolor", "binary"};
  return names;
}

bool Uint8Rgb(const cv::Mat& m) { return m.type() == CV_8UC3; }

cv::Mat Crop(const cv::Mat& m, int h, int w) { return m(cv::Rect(0, 0, w, h)).clone(); }

// numpy's legacy RandomState(seed).uniform(0, 1): MT19937 seeded by init_genrand, 53-bit doubles from two draws.
class NumpyUniform {
 public:
  explicit NumpyUniform(std::uint32_t seed) : gen_(seed) {}
  double Next() {
    const std::uint32_t a = static_cast<std::uint32_t>(gen_()) >> 5, b = static_cast<std::uint32_t>(gen_()) >> 6;
    return (a * 67108864.0 + b) / 9007199254740992.0;
  }

 private:
  std::mt19937 gen_;
};

// annotator.util.make_noise_disk(H, W, 1, 256).
cv::Mat NoiseDisk(int h, int w, NumpyUniform& rng) {
  constexpr int f = 256;
  cv::Mat noise(h / f + 2, w / f + 2, CV_64F);
  for (int y = 0; y < noise.rows; ++y) {
    for (int x = 0; x < noise.cols; ++x) noise.at<double>(y, x) = rng.Next();
  }
  cv::Mat big;
  cv::resize(noise, big, cv::Size(w + 2 * f, h + 2 * f), 0, 0, cv::INTER_CUBIC);
  cv::Mat n = big(cv::Rect(f, f, w, h)).clone();
  double lo = 0, hi = 0;
  cv::minMaxLoc(n, &lo, nullptr);
  n -= lo;
  cv::minMaxLoc(n, nullptr, &hi);
  if (hi > 0) n /= hi;
  return n;
}

cv::Mat Canny(const cv::Mat& rgb_padded, double low, double high) {
  cv::Mat edges, out;
  cv::Canny(rgb_padded, edges, static_cast<int>(low), static_cast<int>(high), 3, false);
  cv::cvtColor(edges, out, cv::COLOR_GRAY2RGB);
  return out;
}

}  // namespace

absl::StatusOr<cv::Mat> RunPreprocessorOrThrow(const ModuleInfo& module, const cv::Mat& input,
                                               const PreprocessorParams& p);

cv::Mat Hwc3(const cv::Mat& x) {
  if (x.type() == CV_8UC3) return x;
  cv::Mat out;
  if (x.type() == CV_8UC1) {
    cv::cvtColor(x, out, cv::COLOR_GRAY2RGB);
    return out;
  }
  out.create(x.rows, x.cols, CV_8UC3);
  for (int y = 0; y < x.rows; ++y) {
    const uint8_t* s = x.ptr<uint8_t>(y);
    uint8_t* d = out.ptr<uint8_t>(y);
    for (int i = 0; i < x.cols; ++i) {
      const float alpha = static_cast<float>(s[4 * i + 3]) / 255.0f;
      for (int c = 0; c < 3; ++c) {
        const float v = static_cast<float>(s[4 * i + c]) * alpha + 255.0f * (1.0f - alpha);
        d[3 * i + c] = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f));
      }
    }
  }
  return out;
}

const std::vector<ModuleInfo>& Modules() {
  static const std::vector<ModuleInfo> modules = BuildModules();
  return modules;
}

const ModuleInfo* FindModule(const std::string& name) {
  for (const auto& m : Modules()) {
    if (m.name == name || m.label == name) return &m;
  }
  return nullptr;
}

bool IsNetworkModule(const std::string& name) { return NetworkModuleNames().count(name) != 0; }

std::string ModuleNames() {
  std::vector<std::string> names;
  for (const auto& m : Modules()) names.push_back(m.name);
  return absl::StrJoin(names, ", ");
}

PreprocessorParams BoundParams(const ModuleInfo& module, double processor_res, double threshold_a,
                               double threshold_b) {
  PreprocessorParams p;
  // processor_res is an int field: a given value prints as an int; a default keeps the slider's type.
  const bool res_out = processor_res < module.resolution.min || processor_res > module.resolution.max;
  p.resolution = res_out ? module.resolution.value : std::trunc(processor_res);
  p.resolution_integral = res_out ? module.resolution.integral : true;
  const Slider hidden;
  const Slider& sa = module.sliders.size() > 0 ? module.sliders[0] : hidden;
  const Slider& sb = module.sliders.size() > 1 ? module.sliders[1] : hidden;
  const bool a_out = threshold_a < sa.min || threshold_a > sa.max;
  const bool b_out = threshold_b < sb.min || threshold_b > sb.max;
  p.a = a_out ? sa.value : threshold_a;
  p.a_integral = a_out && sa.integral;
  p.b = b_out ? sb.value : threshold_b;
  p.b_integral = b_out && sb.integral;
  return p;
}

cv::Mat ResizeImageWithPad(const cv::Mat& rgb, double resolution, int* height, int* width) {
  const double k = resolution / static_cast<double>(std::min(rgb.rows, rgb.cols));
  const int interpolation = k > 1 ? cv::INTER_CUBIC : cv::INTER_AREA;
  const int h = RoundHalfEven(rgb.rows * k), w = RoundHalfEven(rgb.cols * k);
  cv::Mat resized;
  cv::resize(rgb, resized, cv::Size(w, h), 0, 0, interpolation);
  const int ph = (h + 63) / 64 * 64 - h, pw = (w + 63) / 64 * 64 - w;
  cv::Mat padded;
  cv::copyMakeBorder(resized, padded, 0, ph, 0, pw, cv::BORDER_REPLICATE);
  *height = h;
  *width = w;
  return padded;
}

absl::StatusOr<cv::Mat> RunPreprocessor(const ModuleInfo& module, const cv::Mat& input, const PreprocessorParams& p) {
  try {
    return RunPreprocessorOrThrow(module, input, p);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("preprocessor ", module.name, " failed: ", e.what()));
  }
}

absl::StatusOr<cv::Mat> RunPreprocessorOrThrow(const ModuleInfo& module, const cv::Mat& input,
                                               const PreprocessorParams& p) {
  if (input.empty() || input.depth() != CV_8U) return absl::InvalidArgumentError("the control image is empty");
  const std::string& n = module.name;
  if (module.inpaint) {
    if (input.type() != CV_8UC4) return absl::InvalidArgumentError(absl::StrCat(n, " needs an image with a mask"));
    return input.clone();
  }
  const cv::Mat rgb = Hwc3(input);
  if (!Uint8Rgb(rgb)) return absl::InvalidArgumentError("the control image must be RGB");
  int h = 0, w = 0;
  if (n == "none" || n == "tile_colorfix" || n == "tile_colorfix+sharp" || n.rfind("reference", 0) == 0) {
    return rgb.clone();
  }
  if (n == "invert") {
    cv::Mat out;
    cv::subtract(cv::Scalar::all(255), rgb, out);
    return out;
  }
  if (n == "canny") {
    cv::Mat padded = ResizeImageWithPad(rgb, p.resolution, &h, &w);
    return Crop(Canny(padded, p.a, p.b), h, w);
  }
  if (n == "blur_gaussian") {
    cv::Mat padded = ResizeImageWithPad(rgb, p.resolution, &h, &w);
    cv::Mat img = Crop(padded, h, w);
    cv::Mat out;
    cv::GaussianBlur(img, out, cv::Size(0, 0), p.a);
    return out;
  }
  if (n == "scribble_xdog") {
    cv::Mat padded = ResizeImageWithPad(rgb, p.resolution, &h, &w);
    cv::Mat f, g1, g2;
    padded.convertTo(f, CV_32F);
    cv::GaussianBlur(f, g1, cv::Size(0, 0), 0.5);
    cv::GaussianBlur(f, g2, cv::Size(0, 0), 5.0);
    cv::Mat diff = g2 - g1;
    cv::Mat out(padded.rows, padded.cols, CV_8UC3, cv::Scalar::all(0));
    for (int y = 0; y < diff.rows; ++y) {
      const float* d = diff.ptr<float>(y);
      uint8_t* o = out.ptr<uint8_t>(y);
      for (int x = 0; x < diff.cols; ++x) {
        const float m = std::min({d[3 * x], d[3 * x + 1], d[3 * x + 2]});
        const uint8_t dog = static_cast<uint8_t>(std::clamp(255.0f - m, 0.0f, 255.0f));
        // uint8 arithmetic, as numpy does it: 2 * (255 - dog) wraps modulo 256.
        const uint8_t v = static_cast<uint8_t>(2 * static_cast<uint8_t>(255 - dog));
        if (v > p.a) o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = 255;
      }
    }
    return Crop(out, h, w);
  }
  if (n == "shuffle") {
    cv::Mat padded = ResizeImageWithPad(rgb, p.resolution, &h, &w);
    cv::Mat img = Crop(padded, h, w);
    NumpyUniform rng(p.seed);
    cv::Mat x = NoiseDisk(h, w, rng) * static_cast<double>(w - 1);
    cv::Mat y = NoiseDisk(h, w, rng) * static_cast<double>(h - 1);
    cv::Mat mx, my, out;
    x.convertTo(mx, CV_32F);
    y.convertTo(my, CV_32F);
    cv::remap(img, out, mx, my, cv::INTER_LINEAR);
    return out;
  }
  if (n == "threshold") {
    cv::Mat padded = ResizeImageWithPad(rgb, p.resolution, &h, &w);
    cv::Mat out(padded.rows, padded.cols, CV_8UC3, cv::Scalar::all(0));
    for (int y = 0; y < padded.rows; ++y) {
      const uint8_t* s = padded.ptr<uint8_t>(y);
      uint8_t* o = out.ptr<uint8_t>(y);
      for (int x = 0; x < padded.cols; ++x) {
        if (std::min({s[3 * x], s[3 * x + 1], s[3 * x + 2]}) > p.a) o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = 255;
      }
    }
    return Crop(out, h, w);
  }
  if (n == "color") {
    const int res = static_cast<int>(p.resolution);
    int nh, nw;
    if (rgb.rows < rgb.cols) {
      nh = res;
      nw = RoundHalfEven(static_cast<double>(rgb.cols) / rgb.rows * res);
    } else {
      nw = res;
      nh = RoundHalfEven(static_cast<double>(rgb.rows) / rgb.cols * res);
    }
    cv::Mat img, c, out;
    cv::resize(rgb, img, cv::Size(nw, nh), 0, 0, cv::INTER_AREA);
    if (img.cols / 64 < 1 || img.rows / 64 < 1) return absl::InvalidArgumentError("color needs a resolution >= 64");
    cv::resize(img, c, cv::Size(img.cols / 64, img.rows / 64), 0, 0, cv::INTER_CUBIC);
    cv::resize(c, out, img.size(), 0, 0, cv::INTER_NEAREST);
    return out;
  }
  if (n == "tile_resample") {
    if (p.a < 1.1) return rgb.clone();
    cv::Mat out;
    const int nh = static_cast<int>(rgb.rows / p.a), nw = static_cast<int>(rgb.cols / p.a);
    cv::resize(rgb, out, cv::Size(std::max(1, nw), std::max(1, nh)), 0, 0, cv::INTER_AREA);
    return out;
  }
  if (n == "recolor_luminance" || n == "recolor_intensity") {
    cv::Mat conv, out;
    // The extension converts its RGB data with BGR2LAB (channels swapped) and BGR2HSV; kept for equal maps.
    const bool lum = n == "recolor_luminance";
    cv::cvtColor(rgb, conv, lum ? cv::COLOR_BGR2Lab : cv::COLOR_BGR2HSV);
    cv::Mat gray(rgb.rows, rgb.cols, CV_8UC1);
    const int ch = lum ? 0 : 2;
    for (int y = 0; y < rgb.rows; ++y) {
      const uint8_t* s = conv.ptr<uint8_t>(y);
      uint8_t* g = gray.ptr<uint8_t>(y);
      for (int x = 0; x < rgb.cols; ++x) {
        const float r = std::pow(static_cast<float>(s[3 * x + ch]) / 255.0f, static_cast<float>(p.a));
        g[x] = static_cast<uint8_t>(std::clamp(r * 255.0f, 0.0f, 255.0f));
      }
    }
    cv::cvtColor(gray, out, cv::COLOR_GRAY2RGB);
    return out;
  }
  if (n == "lineart_standard") {
    cv::Mat padded = ResizeImageWithPad(rgb, p.resolution, &h, &w);
    cv::Mat x, g;
    padded.convertTo(x, CV_32F);
    cv::GaussianBlur(x, g, cv::Size(0, 0), 6.0);
    cv::Mat intensity(x.rows, x.cols, CV_32F);
    std::vector<float> above8;
    for (int y = 0; y < x.rows; ++y) {
      const float* xs = x.ptr<float>(y);
      const float* gs = g.ptr<float>(y);
      float* o = intensity.ptr<float>(y);
      for (int i = 0; i < x.cols; ++i) {
        float m = std::min({gs[3 * i] - xs[3 * i], gs[3 * i + 1] - xs[3 * i + 1], gs[3 * i + 2] - xs[3 * i + 2]});
        m = std::clamp(m, 0.0f, 255.0f);
        o[i] = m;
        if (m > 8) above8.push_back(m);
      }
    }
    float median = 16.0f;
    if (!above8.empty()) {
      // numpy's median: the mean of the two middle values for an even count.
      const size_t k = above8.size() / 2;
      std::nth_element(above8.begin(), above8.begin() + k, above8.end());
      float med = above8[k];
      if (above8.size() % 2 == 0) {
        const float lower = *std::max_element(above8.begin(), above8.begin() + k);
        med = (lower + med) / 2.0f;
      }
      median = std::max(16.0f, med);
    }
    cv::Mat out8(x.rows, x.cols, CV_8UC1);
    for (int y = 0; y < x.rows; ++y) {
      const float* s = intensity.ptr<float>(y);
      uint8_t* o = out8.ptr<uint8_t>(y);
      for (int i = 0; i < x.cols; ++i) o[i] = static_cast<uint8_t>(std::clamp(s[i] / median * 127.0f, 0.0f, 255.0f));
    }
    cv::Mat out;
    cv::cvtColor(Crop(out8, h, w), out, cv::COLOR_GRAY2RGB);
    return out;
  }
  return absl::UnimplementedError(absl::StrCat("preprocessor '", n, "' is not implemented"));
}

}  // namespace atelier::controlnet
