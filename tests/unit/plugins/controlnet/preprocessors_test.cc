// The ControlNet plugin's image side: the canny fixture (raw cv::Canny bit-exact, resize_image_with_pad with its
// cubic and area resizes, the whole preprocessor), the other model-free preprocessors against independent facts,
// the resize modes and high quality resize, pixel perfect, unit parsing and the infotext line.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include "control_unit.h"
#include "fixture_case.h"
#include "hint_image.h"
#include "preprocessors.h"

namespace atelier {
namespace {

namespace cn = controlnet;
using ::testing::HasSubstr;

cv::Mat MatOf(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  const int ch = c.dim() == 3 ? static_cast<int>(c.size(2)) : 1;
  return cv::Mat(static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), CV_8UC(ch), c.data_ptr()).clone();
}

::testing::AssertionResult SameBytes(const cv::Mat& got, const at::Tensor& want) {
  cv::Mat w = MatOf(want);
  if (got.size() != w.size() || got.type() != w.type()) {
    return ::testing::AssertionFailure() << "size/type " << got.cols << "x" << got.rows << "x" << got.channels()
                                         << " vs " << w.cols << "x" << w.rows << "x" << w.channels();
  }
  cv::Mat diff;
  cv::absdiff(got.reshape(1), w.reshape(1), diff);
  const int bad = cv::countNonZero(diff);
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " bytes differ";
}

TEST(CannyTest, RawEdgesAndThePreprocessorAreBitExact) {
  for (const auto& c : testing::CasesOf("canny")) {
    SCOPED_TRACE(c.dir.string());
    const cn::ModuleInfo* canny = cn::FindModule("canny");
    ASSERT_NE(canny, nullptr);
    int checked = 0;
    for (const auto& [key, want] : c.io) {
      // canny_raw_<img>_<low>_<high>: cv::Canny on the unpadded image.
      if (key.rfind("canny_raw_", 0) == 0) {
        const std::string img = key.substr(10, 1);
        int low = 0, high = 0;
        ASSERT_EQ(std::sscanf(key.c_str() + 12, "%d_%d", &low, &high), 2) << key;
        cv::Mat edges;
        cv::Canny(MatOf(c.io.at("image_" + img)), edges, low, high, 3, false);
        EXPECT_TRUE(SameBytes(edges, want)) << key;
        ++checked;
      }
      // pre_<img>_native_<low>_<high>: the whole preprocessor at the short side's resolution.
      if (key.rfind("pre_", 0) == 0 && key.find("_native_") != std::string::npos) {
        const std::string img = key.substr(4, 1);
        int low = 0, high = 0;
        ASSERT_EQ(std::sscanf(key.c_str() + key.find("_native_") + 8, "%d_%d", &low, &high), 2) << key;
        const cv::Mat image = MatOf(c.io.at("image_" + img));
        auto p = cn::BoundParams(*canny, std::min(image.rows, image.cols), low, high);
        auto out = cn::RunPreprocessor(*canny, image, p);
        ASSERT_TRUE(out.ok()) << out.status();
        EXPECT_TRUE(SameBytes(*out, want)) << key;
        ++checked;
      }
    }
    // Resized runs: the resolution of each is in the case's config.
    const auto& res = c.json["config"]["resolutions"];
    struct Run { const char* image; const char* res_key; const char* padded; const char* pre; };
    for (const Run& r : {Run{"image_a", "cubic_upscale", "resized_padded_a_up", "pre_a_up_100_200"},
                         Run{"image_b", "area_downscale", "resized_padded_b_down", "pre_b_down_100_200"}}) {
      if (!c.io.count(r.padded) || !res.contains(r.res_key)) continue;
      const cv::Mat image = MatOf(c.io.at(r.image));
      int h = 0, w = 0;
      cv::Mat padded = cn::ResizeImageWithPad(image, res[r.res_key].get<double>(), &h, &w);
      EXPECT_TRUE(SameBytes(padded, c.io.at(r.padded))) << r.padded;
      auto p = cn::BoundParams(*canny, res[r.res_key].get<double>(), 100, 200);
      auto out = cn::RunPreprocessor(*canny, image, p);
      ASSERT_TRUE(out.ok());
      EXPECT_TRUE(SameBytes(*out, c.io.at(r.pre))) << r.pre;
      checked += 2;
    }
    EXPECT_GE(checked, 4);
  }
}

cv::Mat Gradient(int h, int w) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b(x * 255 / (w - 1), y * 255 / (h - 1), 128);
  }
  return m;
}

TEST(PreprocessorTest, ModelFreeModulesFollowTheExtension) {
  const cv::Mat img = Gradient(96, 128);
  auto run = [&](const std::string& name, double res, double a, double b) {
    const cn::ModuleInfo* m = cn::FindModule(name);
    EXPECT_NE(m, nullptr) << name;
    auto out = cn::RunPreprocessor(*m, img, cn::BoundParams(*m, res, a, b));
    EXPECT_TRUE(out.ok()) << name << ": " << out.status();
    return out.ok() ? *out : cv::Mat();
  };
  // invert: 255 - x, same size.
  cv::Mat inv = run("invert", -1, -1, -1);
  EXPECT_EQ(inv.at<cv::Vec3b>(5, 7), cv::Vec3b(255, 255, 255) - img.at<cv::Vec3b>(5, 7));
  // none: the image itself.
  cv::Mat none = run("none", -1, -1, -1), ne = none.reshape(1) != img.reshape(1);
  EXPECT_EQ(cv::countNonZero(ne), 0);
  // threshold at 127: 255 exactly where min(R, G, B) > 127, at the short side's resolution (96: no resize).
  cv::Mat th = run("threshold", 96, 127, -1);
  for (int y = 0; y < 96; y += 7) {
    for (int x = 0; x < 128; x += 5) {
      const auto p = img.at<cv::Vec3b>(y, x);
      EXPECT_EQ(th.at<cv::Vec3b>(y, x)[0], std::min({p[0], p[1], p[2]}) > 127 ? 255 : 0) << y << "," << x;
    }
  }
  // The resolution sets the short side: 192 doubles the image.
  EXPECT_EQ(run("canny", 192, -1, -1).size(), cv::Size(256, 192));
  EXPECT_EQ(run("blur_gaussian", 64, -1, -1).size(), cv::Size(85, 64));
  // Below the slider minimum (64) the default 512 applies, as in the extension.
  EXPECT_EQ(run("blur_gaussian", 48, -1, -1).size(), cv::Size(683, 512));
  // tile_resample: rate 2 halves the size; below 1.1 the image comes back unchanged.
  EXPECT_EQ(run("tile_resample", -1, 2.0, -1).size(), cv::Size(64, 48));
  EXPECT_EQ(run("tile_resample", -1, -1, -1).size(), cv::Size(128, 96));
  // color: a 1/64 grid of flat cells.
  cv::Mat grid = run("color", 128, -1, -1);
  EXPECT_EQ(grid.size(), cv::Size(171, 128));
  EXPECT_EQ(grid.at<cv::Vec3b>(0, 0), grid.at<cv::Vec3b>(63, 63));
  // recolor_intensity at gamma 1: V = max(R, G, B) as gray.
  cv::Mat rec = run("recolor_intensity", -1, 1.0, -1);
  const auto p = img.at<cv::Vec3b>(40, 90);
  EXPECT_EQ(rec.at<cv::Vec3b>(40, 90)[0], std::max({p[0], p[1], p[2]}));
  // lineart_standard on a flat image: no lines.
  cv::Mat flat(64, 64, CV_8UC3, cv::Scalar::all(200));
  auto ls = cn::RunPreprocessor(*cn::FindModule("lineart_standard"), flat, cn::BoundParams(*cn::FindModule("lineart_standard"), 64, -1, -1));
  ASSERT_TRUE(ls.ok());
  EXPECT_EQ(cv::countNonZero(ls->reshape(1)), 0);
  // shuffle is a permutation-like remap, seeded: same seed same map, another seed another map.
  const cn::ModuleInfo* sh = cn::FindModule("shuffle");
  auto ps = cn::BoundParams(*sh, -1, -1, -1);
  EXPECT_EQ(ps.resolution, 512);
  ps.seed = 1234;
  auto s1 = cn::RunPreprocessor(*sh, img, ps);
  auto s2 = cn::RunPreprocessor(*sh, img, ps);
  ps.seed = 99;
  auto s3 = cn::RunPreprocessor(*sh, img, ps);
  ASSERT_TRUE(s1.ok() && s2.ok() && s3.ok());
  cv::Mat d12 = s1->reshape(1) != s2->reshape(1), d13 = s1->reshape(1) != s3->reshape(1);
  EXPECT_EQ(cv::countNonZero(d12), 0);
  EXPECT_GT(cv::countNonZero(d13), 0);
  // scribble_xdog on a flat image: nothing.
  auto xd = cn::RunPreprocessor(*cn::FindModule("scribble_xdog"), flat, cn::BoundParams(*cn::FindModule("scribble_xdog"), 64, -1, -1));
  ASSERT_TRUE(xd.ok());
  EXPECT_EQ(cv::countNonZero(xd->reshape(1)), 0);
  // Labels are accepted as names; network modules are known but not here.
  EXPECT_EQ(cn::FindModule("t2ia_color_grid"), cn::FindModule("color"));
  EXPECT_EQ(cn::FindModule("openpose"), nullptr);
  EXPECT_TRUE(cn::IsNetworkModule("openpose"));
  EXPECT_TRUE(cn::IsNetworkModule("depth_midas"));
}

TEST(PreprocessorTest, SliderBoundsTakeTheDefaults) {
  const cn::ModuleInfo* canny = cn::FindModule("canny");
  auto p = cn::BoundParams(*canny, -1, -1, -1);
  EXPECT_EQ(p.resolution, 512);
  EXPECT_EQ(p.a, 100);
  EXPECT_EQ(p.b, 200);
  EXPECT_TRUE(p.a_integral);
  p = cn::BoundParams(*canny, 5000, 50, 300);  // out of range -> default; in range kept (a float then)
  EXPECT_EQ(p.resolution, 512);
  EXPECT_EQ(p.a, 50);
  EXPECT_FALSE(p.a_integral);
  EXPECT_EQ(p.b, 200);
  // Hidden sliders: 0.5 (invert's resolution prints "0.5" in the extension's infotext).
  p = cn::BoundParams(*cn::FindModule("invert"), 512, -1, -1);
  EXPECT_EQ(p.resolution, 0.5);
  EXPECT_EQ(p.a, 0.5);
  // module_list order: none first, then by priority and label, descending.
  EXPECT_EQ(cn::Modules()[0].name, "none");
  EXPECT_EQ(cn::Modules()[1].name, "tile_resample");
}

TEST(HintImageTest, ResizeModesAndPixelPerfect) {
  cv::Mat img = Gradient(100, 200);
  // Just Resize stretches.
  EXPECT_EQ(cn::FitDetectedMap(img, cn::ResizeMode::kJustResize, 64, 64).size(), cv::Size(64, 64));
  // Crop and Resize: scale by the larger factor (0.64 -> 128x64), centre-crop to 64x64.
  cv::Mat crop = cn::FitDetectedMap(img, cn::ResizeMode::kCropAndResize, 64, 64);
  EXPECT_EQ(crop.size(), cv::Size(64, 64));
  // Resize and Fill: scale by the smaller (0.32 -> 64x32), pad with the border's median colour.
  cv::Mat fill = cn::FitDetectedMap(cv::Mat(100, 200, CV_8UC3, cv::Scalar(10, 20, 30)), cn::ResizeMode::kResizeAndFill, 64, 64);
  EXPECT_EQ(fill.size(), cv::Size(64, 64));
  EXPECT_EQ(fill.at<cv::Vec3b>(0, 0), cv::Vec3b(10, 20, 30));
  // The extension's test: a 100x100 image to 50x100 -> 50 (Resize and Fill) / 100 (the others).
  EXPECT_EQ(cn::PixelPerfectResolution(100, 100, 50, 100, cn::ResizeMode::kResizeAndFill), 50);
  EXPECT_EQ(cn::PixelPerfectResolution(100, 100, 50, 100, cn::ResizeMode::kCropAndResize), 100);
  // A binary one-pixel edge map stays binary and thin when enlarged.
  cv::Mat edges(64, 64, CV_8UC3, cv::Scalar::all(0));
  cv::line(edges, {5, 5}, {60, 40}, cv::Scalar::all(255), 1);
  cv::Mat big = cn::HighQualityResize(edges, 128, 128);
  cv::Mat gray;
  cv::extractChannel(big, gray, 0);
  cv::Mat white = gray == 255, black = gray == 0;
  EXPECT_EQ(cv::countNonZero(white) + cv::countNonZero(black), 128 * 128);
  EXPECT_LT(cv::countNonZero(gray), 128 * 4);
  // An inpaint map: masked pixels become -1 in the hint.
  cv::Mat rgba(16, 16, CV_8UC4, cv::Scalar(255, 0, 0, 0));
  rgba(cv::Rect(0, 0, 8, 16)).setTo(cv::Scalar(255, 0, 0, 255));
  at::Tensor hint = cn::HintTensor(cn::FitDetectedMap(rgba, cn::ResizeMode::kJustResize, 16, 16));
  EXPECT_EQ(hint.sizes(), (std::vector<int64_t>{1, 3, 16, 16}));
  EXPECT_EQ(hint[0][1][0][0].item<float>(), -1.0f);
  EXPECT_EQ(hint[0][0][0][12].item<float>(), 1.0f);
}

TEST(ControlUnitTest, FieldsAliasesEnumsAndErrors) {
  auto u = cn::ParseUnit(nlohmann::json::parse(R"j({"enabled": true, "module": "canny", "model": "x",
      "input_image": "abc", "lowvram": true, "guidance": 0.5, "resize_mode": "Envelope (Outer Fit)",
      "control_mode": 2, "hr_option": "Low res only", "unknown_field": 1})j"), 0);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(u->enabled);
  EXPECT_EQ(u->image, "abc");
  EXPECT_TRUE(u->low_vram);
  EXPECT_EQ(u->guidance_end, 0.5);
  EXPECT_EQ(u->resize_mode, cn::ResizeMode::kResizeAndFill);
  EXPECT_EQ(u->control_mode, cn::ControlMode::kControlMoreImportant);
  EXPECT_EQ(u->hr_option, cn::HrOption::kLowResOnly);
  // Defaults.
  u = cn::ParseUnit(nlohmann::json::object(), 0);
  ASSERT_TRUE(u.ok());
  EXPECT_FALSE(u->enabled);
  EXPECT_EQ(u->module, "none");
  EXPECT_EQ(u->model, "None");
  EXPECT_EQ(u->resize_mode, cn::ResizeMode::kCropAndResize);
  EXPECT_TRUE(u->save_detected_map);
  // image as {image, mask} and [image, mask].
  u = cn::ParseUnit(nlohmann::json::parse(R"j({"image": {"image": "i", "mask": "m"}})j"), 0);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->mask, "m");
  u = cn::ParseUnit(nlohmann::json::parse(R"j({"image": ["i", "m"]})j"), 0);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->mask, "m");
  // batch_images: one image per batch item (strings or {"image": ...}).
  u = cn::ParseUnit(nlohmann::json::parse(R"j({"batch_images": ["a", {"image": "b"}]})j"), 0);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->batch_images, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(cn::ParseUnit(nlohmann::json::parse(R"j({"batch_images": "a"})j"), 0).ok());
  EXPECT_FALSE(cn::ParseUnit(nlohmann::json::parse(R"j({"batch_images": [1]})j"), 0).ok());
  // Errors name the field and the valid choices.
  auto bad = cn::ParseUnit(nlohmann::json::parse(R"({"weight": 2.5})"), 1);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("unit 1: weight must be in [0, 2]"));
  bad = cn::ParseUnit(nlohmann::json::parse(R"({"guidance_start": 0.8, "guidance_end": 0.2})"), 0);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("guidance_start (0.8) is after guidance_end (0.2)"));
  bad = cn::ParseUnit(nlohmann::json::parse(R"({"control_mode": "Strong"})"), 0);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("\"Balanced\", \"My prompt is more important\""));
  bad = cn::ParseUnit(nlohmann::json::parse(R"({"guidance": 0.5, "guidance_end": 0.7})"), 0);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("conflicts with guidance_end"));
}

TEST(ControlUnitTest, InfotextIsTheExtensionsLineAndParsesBack) {
  cn::InfotextValues v;
  v.module = "canny";
  v.model = "control_v11p_sd15_canny [d14c016b]";
  v.processor_res = "512";
  v.threshold_a = "100";
  v.threshold_b = "200";
  const std::string line = cn::UnitInfotext(v);
  EXPECT_EQ(line,
            "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and Resize, "
            "Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0, "
            "Pixel Perfect: False, Control Mode: Balanced");
  auto unit = cn::ParseUnitInfotext(line);
  ASSERT_TRUE(unit.ok()) << unit.status();
  EXPECT_EQ((*unit)["module"], "canny");
  EXPECT_EQ((*unit)["processor_res"], 512);
  EXPECT_EQ((*unit)["guidance_end"], 1.0);
  EXPECT_EQ((*unit)["pixel_perfect"], false);
  EXPECT_EQ((*unit)["resize_mode"], "Crop and Resize");
  auto parsed = cn::ParseUnit(*unit, 0);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->enabled);
  EXPECT_EQ(parsed->model, "control_v11p_sd15_canny [d14c016b]");
  EXPECT_FALSE(cn::ParseUnitInfotext("preprocessor: canny, starting/ending: (0, 1)").ok());
}

}  // namespace
}  // namespace atelier
