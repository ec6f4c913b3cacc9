// One sd-webui-controlnet unit as the API takes it (internal_controlnet/args.py ControlNetUnit, pydantic with
// extra="ignore"): every field with its default, its aliases (input_image, mask_image, lowvram, guidance) and its
// enum forms (the strings, the legacy aliases of the resize modes, and the 0/1/2 ints older versions took); the
// infotext line the extension writes for it ("Module: canny, Model: ..., Weight: 1.0, ...") and its parse back.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "control_weights.h"
#include "hint_image.h"

namespace atelier::controlnet {

enum class HrOption { kBoth = 0, kLowResOnly = 1, kHighResOnly = 2 };

const char* ResizeModeName(ResizeMode m);
const char* ControlModeName(ControlMode m);
const char* HrOptionName(HrOption o);

struct ControlUnit {
  bool enabled = false;
  std::string module = "none";
  std::string model = "None";
  double weight = 1.0;
  std::string image;  // base64 (an optional data: URL prefix), "" for none
  std::string mask;   // base64, "" for none
  // batch_images: one image per batch item (an AnimateDiff clip's frames: frame i is hinted by image i, cycling
  // when there are fewer), base64 each; empty: `image` hints every item. batch_masks: each item's mask ({"image":
  // ..., "mask": ...} items; "" for none: the unit's `mask` then applies), as sd-webui-controlnet's batch mask folder.
  std::vector<std::string> batch_images;
  std::vector<std::string> batch_masks;
  ResizeMode resize_mode = ResizeMode::kCropAndResize;
  bool low_vram = false;
  double processor_res = -1;
  double threshold_a = -1, threshold_b = -1;
  double guidance_start = 0.0, guidance_end = 1.0;
  bool pixel_perfect = false;
  ControlMode control_mode = ControlMode::kBalanced;
  bool inpaint_crop_input_image = true;
  HrOption hr_option = HrOption::kBoth;
  bool save_detected_map = true;
  std::vector<double> advanced_weighting;  // empty, or 13 scales
};

// Parses one unit (a JSON object). INVALID_ARGUMENT naming the unit (`index`) and the field for a wrong type, an
// unknown enum value (listing the valid ones), weight outside [0, 2], guidance outside [0, 1] or start > end,
// advanced_weighting not 13 numbers, or an alias given together with its field.
absl::StatusOr<ControlUnit> ParseUnit(const nlohmann::json& j, int index);

// WebUI's positional form of a unit's fields (the UI's script args), for Args::Units.
const std::vector<std::string>& PositionalFields();

// The infotext value of a unit, as the extension's serialize() writes it (the 11 fields, Python's str of each
// value; processor_res/threshold_a/b already bound to the module's defaults by the caller).
struct InfotextValues {
  std::string module, model;
  double weight = 1;
  ResizeMode resize_mode = ResizeMode::kCropAndResize;
  std::string processor_res, threshold_a, threshold_b;  // already printed
  double guidance_start = 0, guidance_end = 1;
  bool pixel_perfect = false;
  ControlMode control_mode = ControlMode::kBalanced;
};
std::string UnitInfotext(const InfotextValues& v);

// The parse back (on_infotext_pasted): "Module: canny, Model: ..., ..." -> a unit as an API dict with
// enabled = true. INVALID_ARGUMENT for the legacy lowercase format or a malformed item.
absl::StatusOr<nlohmann::json> ParseUnitInfotext(const std::string& value);

}  // namespace atelier::controlnet
