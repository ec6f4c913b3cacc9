#include "control_unit.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/pipeline/infotext.h"

namespace atelier::controlnet {
namespace {

using nlohmann::json;

absl::Status Bad(int index, const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("ControlNet unit ", index, ": ", field, " ", why));
}

std::string Quoted(const json& v) {
  std::string s = v.dump();
  if (s.size() > 64) s = s.substr(0, 64) + "...";
  return s;
}

absl::StatusOr<bool> Bool(const json& j, const std::string& f, bool fallback, int index) {
  if (!j.contains(f) || j[f].is_null()) return fallback;
  if (j[f].is_boolean()) return j[f].get<bool>();
  if (j[f].is_number() && (j[f].get<double>() == 0 || j[f].get<double>() == 1)) return j[f].get<double>() == 1;
  return Bad(index, f, absl::StrCat("must be true or false, got ", Quoted(j[f])));
}

absl::StatusOr<double> Number(const json& j, const std::string& f, double fallback, int index) {
  if (!j.contains(f) || j[f].is_null()) return fallback;
  if (j[f].is_number()) return j[f].get<double>();
  if (j[f].is_string()) {
    double v = 0;
    if (absl::SimpleAtod(j[f].get<std::string>(), &v)) return v;
  }
  return Bad(index, f, absl::StrCat("must be a number, got ", Quoted(j[f])));
}

absl::StatusOr<std::string> String(const json& j, const std::string& f, const std::string& fallback, int index) {
  if (!j.contains(f) || j[f].is_null()) return fallback;
  if (j[f].is_string()) return j[f].get<std::string>();
  return Bad(index, f, absl::StrCat("must be a string, got ", Quoted(j[f])));
}

// An enum given as one of `names` (or an alias), or its index.
template <typename E>
absl::StatusOr<E> Enum(const json& j, const std::string& f, E fallback, const std::vector<std::string>& names,
                       const std::map<std::string, int>& aliases, int index) {
  if (!j.contains(f) || j[f].is_null()) return fallback;
  const json& v = j[f];
  // Integers (also as JSON doubles, as a protobuf Struct carries them).
  if (v.is_number() && v.get<double>() == std::floor(v.get<double>())) {
    const double i = v.get<double>();
    if (i >= 0 && i < static_cast<double>(names.size())) return static_cast<E>(static_cast<int>(i));
  } else if (v.is_string()) {
    std::string s = v.get<std::string>();
    // The pre-pydantic API also accepted "ResizeMode.INNER_FIT"-style names; values are matched as written.
    for (size_t i = 0; i < names.size(); ++i) {
      if (s == names[i]) return static_cast<E>(i);
    }
    auto it = aliases.find(s);
    if (it != aliases.end()) return static_cast<E>(it->second);
  }
  std::vector<std::string> quoted;
  for (const auto& n : names) quoted.push_back(absl::StrCat("\"", n, "\""));
  return Bad(index, f, absl::StrCat("must be one of ", absl::StrJoin(quoted, ", "), " (or 0..", names.size() - 1,
                                    "), got ", Quoted(v)));
}

const std::vector<std::string> kResizeModes = {"Just Resize", "Crop and Resize", "Resize and Fill"};
const std::vector<std::string> kControlModes = {"Balanced", "My prompt is more important",
                                                "ControlNet is more important"};
const std::vector<std::string> kHrOptions = {"Both", "Low res only", "High res only"};

// Python's str() of a float.
std::string Py(double v) { return engine::PythonFloat(v); }

}  // namespace

const char* ResizeModeName(ResizeMode m) { return kResizeModes[static_cast<int>(m)].c_str(); }
const char* ControlModeName(ControlMode m) { return kControlModes[static_cast<int>(m)].c_str(); }
const char* HrOptionName(HrOption o) { return kHrOptions[static_cast<int>(o)].c_str(); }

const std::vector<std::string>& PositionalFields() {
  static const std::vector<std::string> fields = {"enabled", "module", "model", "weight", "image"};
  return fields;
}

absl::StatusOr<ControlUnit> ParseUnit(const json& in, int index) {
  if (!in.is_object()) return Bad(index, "", absl::StrCat("must be an object, got ", Quoted(in)));
  json j = in;
  // legacy_field_alias / mask_alias.
  for (const auto& [alias, field] : std::vector<std::pair<std::string, std::string>>{
           {"guidance", "guidance_end"}, {"lowvram", "low_vram"}, {"input_image", "image"}, {"mask_image", "mask"}}) {
    if (!j.contains(alias)) continue;
    if (j.contains(field) && !j[field].is_null() && !j[alias].is_null()) {
      return Bad(index, alias, absl::StrCat("conflicts with ", field, ": give one of them"));
    }
    j[field] = j[alias];
  }
  ControlUnit u;
  auto b = Bool(j, "enabled", false, index);
  if (!b.ok()) return b.status();
  u.enabled = *b;
  auto s = String(j, "module", "none", index);
  if (!s.ok()) return s.status();
  u.module = *s;
  s = String(j, "model", "None", index);
  if (!s.ok()) return s.status();
  u.model = *s;
  auto n = Number(j, "weight", 1.0, index);
  if (!n.ok()) return n.status();
  u.weight = *n;
  if (!(u.weight >= 0.0 && u.weight <= 2.0)) {
    return Bad(index, "weight", absl::StrCat("must be in [0, 2], got ", Py(u.weight)));
  }
  // image: base64, {"image", "mask"}, [image, mask], or a list of such dicts (the first is used).
  if (j.contains("image") && !j["image"].is_null()) {
    json img = j["image"];
    if (img.is_array() && !img.empty() && img[0].is_object()) img = img[0];
    if (img.is_string()) {
      u.image = img.get<std::string>();
    } else if (img.is_object()) {
      if (img.contains("image") && img["image"].is_string()) u.image = img["image"].get<std::string>();
      if (img.contains("mask") && img["mask"].is_string()) u.mask = img["mask"].get<std::string>();
      if (u.image.empty()) return Bad(index, "image", "is a dict without an \"image\" string");
    } else if (img.is_array() && img.size() == 2 && img[0].is_string()) {
      u.image = img[0].get<std::string>();
      if (img[1].is_string()) u.mask = img[1].get<std::string>();
    } else {
      return Bad(index, "image", "must be a base64 image, {\"image\": ..., \"mask\": ...} or [image, mask]");
    }
  }
  if (j.contains("batch_images") && !j["batch_images"].is_null()) {
    if (!j["batch_images"].is_array()) return Bad(index, "batch_images", "must be a list of base64 images");
    for (const auto& item : j["batch_images"]) {
      if (item.is_string()) {
        u.batch_images.push_back(item.get<std::string>());
        u.batch_masks.emplace_back();
      } else if (item.is_object() && item.contains("image") && item["image"].is_string()) {
        u.batch_images.push_back(item["image"].get<std::string>());
        const bool has_mask = item.contains("mask") && item["mask"].is_string();
        u.batch_masks.push_back(has_mask ? item["mask"].get<std::string>() : std::string());
      } else {
        return Bad(index, "batch_images", "must be a list of base64 images");
      }
    }
    if (u.batch_images.size() > 1024) return Bad(index, "batch_images", "has more than 1024 images");
  }
  if (j.contains("mask") && !j["mask"].is_null()) {
    if (!j["mask"].is_string()) return Bad(index, "mask", "must be a base64 image");
    if (!u.mask.empty()) return Bad(index, "mask", "is given twice (in image and in mask)");
    u.mask = j["mask"].get<std::string>();
  }
  auto rm = Enum<ResizeMode>(j, "resize_mode", ResizeMode::kCropAndResize, kResizeModes,
                             {{"Inner Fit (Scale to Fit)", 1}, {"Scale to Fit (Inner Fit)", 1},
                              {"Outer Fit (Shrink to Fit)", 2}, {"Envelope (Outer Fit)", 2}},
                             index);
  if (!rm.ok()) return rm.status();
  u.resize_mode = *rm;
  b = Bool(j, "low_vram", false, index);
  if (!b.ok()) return b.status();
  u.low_vram = *b;
  for (auto [field, target] : {std::pair<const char*, double*>{"processor_res", &u.processor_res},
                               {"threshold_a", &u.threshold_a}, {"threshold_b", &u.threshold_b}}) {
    n = Number(j, field, -1, index);
    if (!n.ok()) return n.status();
    *target = *n;
  }
  n = Number(j, "guidance_start", 0.0, index);
  if (!n.ok()) return n.status();
  u.guidance_start = *n;
  n = Number(j, "guidance_end", 1.0, index);
  if (!n.ok()) return n.status();
  u.guidance_end = *n;
  for (auto [field, v] : {std::pair<const char*, double>{"guidance_start", u.guidance_start}, {"guidance_end", u.guidance_end}}) {
    if (!(v >= 0.0 && v <= 1.0)) return Bad(index, field, absl::StrCat("must be in [0, 1], got ", Py(v)));
  }
  if (u.guidance_start > u.guidance_end) {
    return Bad(index, "guidance_start",
               absl::StrCat("(", Py(u.guidance_start), ") is after guidance_end (", Py(u.guidance_end), ")"));
  }
  b = Bool(j, "pixel_perfect", false, index);
  if (!b.ok()) return b.status();
  u.pixel_perfect = *b;
  auto cm = Enum<ControlMode>(j, "control_mode", ControlMode::kBalanced, kControlModes, {}, index);
  if (!cm.ok()) return cm.status();
  u.control_mode = *cm;
  b = Bool(j, "inpaint_crop_input_image", true, index);
  if (!b.ok()) return b.status();
  u.inpaint_crop_input_image = *b;
  auto hr = Enum<HrOption>(j, "hr_option", HrOption::kBoth, kHrOptions, {}, index);
  if (!hr.ok()) return hr.status();
  u.hr_option = *hr;
  b = Bool(j, "save_detected_map", true, index);
  if (!b.ok()) return b.status();
  u.save_detected_map = *b;
  if (j.contains("advanced_weighting") && !j["advanced_weighting"].is_null()) {
    const json& a = j["advanced_weighting"];
    if (!a.is_array() || a.size() != static_cast<size_t>(kResiduals)) {
      return Bad(index, "advanced_weighting", absl::StrCat("must be a list of ", kResiduals, " numbers (SD1.x)"));
    }
    for (const auto& v : a) {
      if (!v.is_number()) return Bad(index, "advanced_weighting", "must hold numbers only");
      u.advanced_weighting.push_back(v.get<double>());
    }
  }
  return u;
}

std::string UnitInfotext(const InfotextValues& v) {
  return absl::StrCat("Module: ", v.module, ", Model: ", v.model, ", Weight: ", Py(v.weight),
                      ", Resize Mode: ", ResizeModeName(v.resize_mode), ", Processor Res: ", v.processor_res,
                      ", Threshold A: ", v.threshold_a, ", Threshold B: ", v.threshold_b,
                      ", Guidance Start: ", Py(v.guidance_start), ", Guidance End: ", Py(v.guidance_end),
                      ", Pixel Perfect: ", v.pixel_perfect ? "True" : "False",
                      ", Control Mode: ", ControlModeName(v.control_mode));
}

absl::StatusOr<json> ParseUnitInfotext(const std::string& value) {
  json unit = json::object();
  unit["enabled"] = true;
  for (absl::string_view item : absl::StrSplit(value, ',')) {
    item = absl::StripAsciiWhitespace(item);
    std::vector<std::string> kv = absl::StrSplit(item, ": ");
    if (kv.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ControlNet infotext item '", item, "' is not 'Key: value' (the legacy lowercase format is not supported, "
                                          "as in sd-webui-controlnet)"));
    }
    // displaytext_to_field: "Processor Res" -> "processor_res".
    std::string field = absl::AsciiStrToLower(absl::StrJoin(absl::StrSplit(kv[0], ' '), "_"));
    const std::string& v = kv[1];
    int64_t i = 0;
    double d = 0;
    if (v == "True" || v == "False") {
      unit[field] = v == "True";
    } else if (absl::SimpleAtoi(v, &i)) {
      unit[field] = i;
    } else if (absl::SimpleAtod(v, &d) && v.find_first_not_of("0123456789+-.eE") == std::string::npos) {
      unit[field] = d;
    } else {
      unit[field] = v;
    }
  }
  return unit;
}

}  // namespace atelier::controlnet
