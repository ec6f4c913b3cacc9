// sd-webui-controlnet's preprocessors that run no neural network (v1.1.455, scripts/preprocessor/*), on 8-bit
// images with OpenCV's imgproc as the extension calls it. Names, labels, sliders (what /controlnet/module_list
// reports) and the slider bound rule (a value outside [min, max] takes the default) follow the extension.
// Preprocessors that need a network (openpose, depth, hed, lineart_anime, ...) are known by name and refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "absl/status/statusor.h"

namespace atelier::controlnet {

struct Slider {
  std::string name;
  double value = 0.5, min = 0.0, max = 1.0, step = 0.01;
  bool integral = false;  // the extension's default is a Python int (infotext prints "100", not "100.0")
};

enum class HookKind { kNone, kReference, kTileColorfix, kInpaintOnly, kRecolor };

struct ModuleInfo {
  std::string name;
  std::string label;        // the UI's name ("t2ia_color_grid", "invert (from white bg & black line)"), also accepted
  bool model_free = false;  // needs no ControlNet model (reference_*)
  int priority = 0;         // module_list order: "none" first, then by priority and label, descending
  std::vector<std::string> tags;  // control types it belongs to ("Canny", "Tile", ...)
  bool resolution_visible = true;
  Slider resolution{"Resolution", 512, 64, 2048, 8, true};
  std::vector<Slider> sliders;  // threshold_a, threshold_b (visible ones)
  bool needs_mask = false;      // inpaint, inpaint_only
  bool inpaint = false;         // a 4-channel hint (RGB + mask)
};

// The modules that work here, in module_list order.
const std::vector<ModuleInfo>& Modules();
// By name or label; nullptr when unknown or not implemented here.
const ModuleInfo* FindModule(const std::string& name);
// Known sd-webui-controlnet modules that need a network (answered UNIMPLEMENTED).
bool IsNetworkModule(const std::string& name);
// "none, invert, canny, ..." for error messages.
std::string ModuleNames();

// A unit's processor_res / threshold_a / threshold_b after the extension's bound check: a value outside a slider's
// [min, max] (the API default -1 among them) becomes its default; hidden sliders default to 0.5 (shuffle's hidden
// resolution: 512).
struct PreprocessorParams {
  double resolution = 512;
  double a = 0.5, b = 0.5;
  // How the infotext prints each (a slider default keeps the extension's Python type; processor_res is an int field).
  bool resolution_integral = true, a_integral = false, b_integral = false;
  std::uint32_t seed = 0;  // shuffle's numpy seed: (seed + subseed) & 0xffffffff as the extension sets it
};
PreprocessorParams BoundParams(const ModuleInfo& module, double processor_res, double threshold_a, double threshold_b);

// The extension's HWC3 of a uint8 image: gray to RGB, RGBA composited over white (truncating), RGB as is.
cv::Mat Hwc3(const cv::Mat& image);

// resize_image_with_pad: the short side to `resolution` (INTER_CUBIC up, INTER_AREA otherwise; sizes rounded half
// to even), then the bottom/right edge replicated to multiples of 64. `*height`/`*width` receive the resized size
// (the crop that undoes the padding).
cv::Mat ResizeImageWithPad(const cv::Mat& rgb, double resolution, int* height, int* width);

// Runs `module` on `input`: uint8 RGB [H, W, 3], or RGBA [H, W, 4] with the mask in alpha for inpaint modules.
// Returns the detected map: uint8 [h, w, 3] (inpaint: the RGBA input unchanged).
absl::StatusOr<cv::Mat> RunPreprocessor(const ModuleInfo& module, const cv::Mat& input, const PreprocessorParams& p);

}  // namespace atelier::controlnet
