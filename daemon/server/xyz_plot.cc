#include "server/xyz_plot.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <regex>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/pipeline/infotext.h"
#include "engine/sampling/noise.h"

namespace atelier::server {
namespace {

enum class Type { kNothing, kInt, kFloat, kStr, kPermutations };
enum class Format { kLabel, kValue, kBasename, kJoin, kNothing };
enum class Mode { kBoth, kTxt2Img, kImg2Img };

struct Value {
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<std::string> list;
};

Value IntValue(int64_t i) {
  Value v;
  v.i = i;
  return v;
}
Value FloatValue(double f) {
  Value v;
  v.f = f;
  return v;
}
Value StrValue(std::string s) {
  Value v;
  v.s = std::move(s);
  return v;
}

using Apply = std::function<absl::Status(v1::GenerateRequest&, const Value&)>;

struct Axis {
  const char* label;
  Type type;
  Mode mode;
  bool choices = false;  // WebUI's dropdown axes (values from x_values_dropdown unless csv_mode)
  double cost = 0;
  Format format = Format::kLabel;
  Apply apply;  // null: an axis this daemon does not apply
};

void Override(v1::GenerateRequest& r, const std::string& key, const google::protobuf::Value& v) {
  (*r.mutable_override_settings()->mutable_fields())[key] = v;
}
google::protobuf::Value Number(double x) {
  google::protobuf::Value v;
  v.set_number_value(x);
  return v;
}
google::protobuf::Value Text(const std::string& x) {
  google::protobuf::Value v;
  v.set_string_value(x);
  return v;
}

// xyz_grid.py apply_order: the permutation's tokens put back in the places the tokens had, in order.
absl::Status ApplyOrder(v1::GenerateRequest& r, const Value& v) {
  std::string prompt = r.prompt();
  std::vector<std::pair<size_t, std::string>> order;
  for (const auto& token : v.list) {
    const size_t at = prompt.find(token);
    if (at == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("Prompt order: '", token.substr(0, 64), "' is not in the prompt"));
    }
    order.emplace_back(at, token);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> parts;
  for (const auto& [unused, token] : order) {
    const size_t n = prompt.find(token);
    parts.push_back(prompt.substr(0, n));
    prompt = prompt.substr(n + token.size());
  }
  std::string rebuilt;
  for (size_t i = 0; i < parts.size(); ++i) rebuilt += parts[i] + v.list[i];
  r.set_prompt(rebuilt + prompt);
  return absl::OkStatus();
}

// WebUI 1.10's axis_options, in order (the API's axis type is an index into the list filtered for the mode).
const std::vector<Axis>& AllAxes() {
  static const std::vector<Axis> axes = {
      {"Nothing", Type::kNothing, Mode::kBoth, false, 0, Format::kNothing, [](auto&, const Value&) { return absl::OkStatus(); }},
      {"Seed", Type::kInt, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_seed(v.i); return absl::OkStatus(); }},
      {"Var. seed", Type::kInt, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_subseed(v.i); return absl::OkStatus(); }},
      {"Var. strength", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_subseed_strength(v.f); return absl::OkStatus(); }},
      {"Steps", Type::kInt, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_steps(static_cast<int32_t>(v.i)); return absl::OkStatus(); }},
      {"Hires steps", Type::kInt, Mode::kTxt2Img, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_hr_second_pass_steps(static_cast<int32_t>(v.i)); return absl::OkStatus(); }},
      {"CFG Scale", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_cfg_scale(v.f); return absl::OkStatus(); }},
      {"Image CFG Scale", Type::kFloat, Mode::kImg2Img, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_image_cfg_scale(v.f); return absl::OkStatus(); }},
      {"Prompt S/R", Type::kStr, Mode::kBoth, false, 0, Format::kValue, nullptr},  // applied with its first value
      {"Prompt order", Type::kPermutations, Mode::kBoth, false, 0, Format::kJoin, ApplyOrder},
      {"Sampler", Type::kStr, Mode::kTxt2Img, true, 0, Format::kValue, [](auto& r, const Value& v) { r.set_sampler_name(v.s); return absl::OkStatus(); }},
      {"Hires sampler", Type::kStr, Mode::kTxt2Img, true, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_hr_sampler_name(v.s); return absl::OkStatus(); }},
      {"Sampler", Type::kStr, Mode::kImg2Img, true, 0, Format::kValue, [](auto& r, const Value& v) { r.set_sampler_name(v.s); return absl::OkStatus(); }},
      {"Checkpoint name", Type::kStr, Mode::kBoth, true, 1.0, Format::kBasename, [](auto& r, const Value& v) { Override(r, "sd_model_checkpoint", Text(v.s)); return absl::OkStatus(); }},
      {"Negative Guidance minimum sigma", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_s_min_uncond(v.f); return absl::OkStatus(); }},
      {"Sigma Churn", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_s_churn(v.f); return absl::OkStatus(); }},
      {"Sigma min", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_s_tmin(v.f); return absl::OkStatus(); }},
      {"Sigma max", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_s_tmax(v.f); return absl::OkStatus(); }},
      {"Sigma noise", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_s_noise(v.f); return absl::OkStatus(); }},
      {"Schedule type", Type::kStr, Mode::kBoth, true, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_scheduler(v.s); return absl::OkStatus(); }},
      {"Schedule min sigma", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, nullptr},
      {"Schedule max sigma", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, nullptr},
      {"Schedule rho", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, nullptr},
      {"Beta schedule alpha", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, nullptr},
      {"Beta schedule beta", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, nullptr},
      {"Eta", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_eta(v.f); return absl::OkStatus(); }},
      {"Clip skip", Type::kInt, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { Override(r, "CLIP_stop_at_last_layers", Number(static_cast<double>(v.i))); return absl::OkStatus(); }},
      {"Denoising", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_denoising_strength(v.f); return absl::OkStatus(); }},
      {"Initial noise multiplier", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_initial_noise_multiplier(v.f); return absl::OkStatus(); }},
      {"Extra noise", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, nullptr},
      {"Hires upscaler", Type::kStr, Mode::kTxt2Img, true, 0, Format::kLabel, [](auto& r, const Value& v) { r.set_hr_upscaler(v.s); return absl::OkStatus(); }},
      {"Cond. Image Mask Weight", Type::kFloat, Mode::kImg2Img, false, 0, Format::kLabel, [](auto& r, const Value& v) { Override(r, "inpainting_mask_weight", Number(v.f)); return absl::OkStatus(); }},
      {"VAE", Type::kStr, Mode::kBoth, true, 0.7, Format::kLabel, [](auto& r, const Value& v) {
         const std::string n = absl::AsciiStrToLower(absl::StripAsciiWhitespace(v.s));
         Override(r, "sd_vae", Text(n == "auto" || n == "automatic" ? "Automatic" : n == "none" ? "None" : std::string(absl::StripAsciiWhitespace(v.s))));
         return absl::OkStatus();
       }},
      {"Styles", Type::kStr, Mode::kBoth, true, 0, Format::kLabel, [](auto& r, const Value& v) {
         for (absl::string_view s : absl::StrSplit(v.s, ',')) r.add_styles(std::string(absl::StripAsciiWhitespace(s)));
         return absl::OkStatus();
       }},
      {"UniPC Order", Type::kInt, Mode::kBoth, false, 0.5, Format::kLabel, nullptr},
      {"Face restore", Type::kStr, Mode::kBoth, false, 0, Format::kValue, nullptr},
      {"Token merging ratio", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, nullptr},
      {"Token merging ratio high-res", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, nullptr},
      {"Always discard next-to-last sigma", Type::kStr, Mode::kBoth, true, 0, Format::kLabel, nullptr},
      {"SGM noise multiplier", Type::kStr, Mode::kBoth, true, 0, Format::kLabel, nullptr},
      {"Refiner checkpoint", Type::kStr, Mode::kBoth, true, 1.0, Format::kBasename, nullptr},
      {"Refiner switch at", Type::kFloat, Mode::kBoth, false, 0, Format::kLabel, nullptr},
      {"RNG source", Type::kStr, Mode::kBoth, true, 0, Format::kLabel, [](auto& r, const Value& v) { Override(r, "randn_source", Text(v.s)); return absl::OkStatus(); }},
      {"FP8 mode", Type::kStr, Mode::kBoth, true, 0.9, Format::kLabel, nullptr},
      {"Size", Type::kStr, Mode::kBoth, false, 0, Format::kLabel, [](auto& r, const Value& v) {
         const size_t x = v.s.find('x');
         int w = 0, h = 0;
         if (x == std::string::npos || !absl::SimpleAtoi(absl::StripAsciiWhitespace(v.s.substr(0, x)), &w) ||
             !absl::SimpleAtoi(absl::StripAsciiWhitespace(v.s.substr(x + 1)), &h)) {
           return absl::InvalidArgumentError(absl::StrCat("Size: '", v.s.substr(0, 32), "' is not WIDTHxHEIGHT"));
         }
         r.set_width(w);
         r.set_height(h);
         return absl::OkStatus();
       }},
  };
  return axes;
}

std::vector<const Axis*> AxesFor(bool img2img) {
  std::vector<const Axis*> out;
  for (const Axis& a : AllAxes()) {
    if (a.mode == Mode::kBoth || (a.mode == Mode::kImg2Img) == img2img) out.push_back(&a);
  }
  return out;
}

// csv.reader(StringIO(s), skipinitialspace=True) over every line, each item stripped.
std::vector<std::string> CsvItems(const std::string& text) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(text, absl::ByAnyChar("\r\n"), absl::SkipEmpty())) {
    std::string field;
    bool quoted = false, at_start = true;
    for (size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (quoted) {
        if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
          field += '"';
          ++i;
        } else if (c == '"') {
          quoted = false;
        } else {
          field += c;
        }
      } else if (c == ',') {
        out.emplace_back(absl::StripAsciiWhitespace(field));
        field.clear();
        at_start = true;
      } else if (at_start && c == ' ') {
        continue;  // skipinitialspace
      } else if (at_start && c == '"') {
        quoted = true;
        at_start = false;
      } else {
        field += c;
        at_start = false;
      }
    }
    out.emplace_back(absl::StripAsciiWhitespace(field));
  }
  return out;
}

// list_to_csv_string: the dropdown's values as one CSV line (the infotext's "X Values").
std::string CsvLine(const std::vector<std::string>& items) {
  std::vector<std::string> fields;
  for (const auto& i : items) {
    if (i.find_first_of(",\"\n\r") != std::string::npos) {
      fields.push_back(absl::StrCat("\"", absl::StrReplaceAll(i, {{"\"", "\"\""}}), "\""));
    } else {
      fields.push_back(i);
    }
  }
  return absl::StrJoin(fields, ",");
}

std::string NoSpaces(std::string s) {
  s.erase(std::remove_if(s.begin(), s.end(), [](char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); }), s.end());
  return s;
}

absl::StatusOr<int64_t> ToInt(const std::string& s, const char* what) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(NoSpaces(s), &v)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": '", s.substr(0, 32), "' is not a whole number"));
  }
  return v;
}

absl::StatusOr<double> ToFloat(const std::string& s, const char* what) {
  double v = 0;
  if (!absl::SimpleAtod(NoSpaces(s), &v) || !std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": '", s.substr(0, 32), "' is not a number"));
  }
  return v;
}

// np.linspace(start, end, num).
std::vector<double> Linspace(double start, double end, int64_t num) {
  std::vector<double> out;
  if (num <= 0) return out;
  if (num == 1) return {start};
  const double step = (end - start) / static_cast<double>(num - 1);
  for (int64_t i = 0; i < num; ++i) out.push_back(i == num - 1 ? end : start + static_cast<double>(i) * step);
  return out;
}

constexpr size_t kMaxAxisValues = 10000;

// process_axis: the values of one axis.
absl::StatusOr<std::vector<Value>> AxisValues(const Axis& axis, const std::string& text,
                                              const std::vector<std::string>& dropdown, bool csv_mode,
                                              const char* what) {
  if (axis.type == Type::kNothing) return std::vector<Value>(1);
  std::vector<std::string> items =
      axis.choices && !csv_mode && !dropdown.empty() ? dropdown : CsvItems(text);
  std::vector<Value> out;
  const auto too_many = [&] {
    return absl::InvalidArgumentError(absl::StrCat(what, ": more than ", kMaxAxisValues, " values"));
  };
  if (axis.type == Type::kInt) {
    static const std::regex kRange(R"(\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*)");
    static const std::regex kCount(R"(\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*)");
    for (const auto& item : items) {
      if (absl::StripAsciiWhitespace(item).empty()) continue;
      std::smatch m;
      if (std::regex_match(item, m, kRange)) {
        auto a = ToInt(m[1].str(), what), b = ToInt(m[2].str(), what);
        auto step = m[3].matched ? ToInt(m[3].str(), what) : absl::StatusOr<int64_t>(1);
        if (!a.ok() || !b.ok() || !step.ok()) return !a.ok() ? a.status() : !b.ok() ? b.status() : step.status();
        if (*step == 0) return absl::InvalidArgumentError(absl::StrCat(what, ": a range step of 0"));
        const int64_t end = *b + 1;  // Python range(a, b + 1, step)
        for (int64_t v = *a; *step > 0 ? v < end : v > end; v += *step) {
          if (out.size() >= kMaxAxisValues) return too_many();
          out.push_back(IntValue(v));
        }
      } else if (std::regex_match(item, m, kCount)) {
        auto a = ToInt(m[1].str(), what), b = ToInt(m[2].str(), what);
        auto n = m[3].matched ? ToInt(m[3].str(), what) : absl::StatusOr<int64_t>(1);
        if (!a.ok() || !b.ok() || !n.ok()) return !a.ok() ? a.status() : !b.ok() ? b.status() : n.status();
        if (*n > static_cast<int64_t>(kMaxAxisValues)) return too_many();
        for (double v : Linspace(static_cast<double>(*a), static_cast<double>(*b), *n)) out.push_back(IntValue(static_cast<int64_t>(v)));
      } else {
        auto v = ToInt(item, what);
        if (!v.ok()) return v.status();
        out.push_back(IntValue(*v));
      }
    }
    return out;
  }
  if (axis.type == Type::kFloat) {
    static const std::regex kRange(
        R"(\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*)");
    static const std::regex kCount(
        R"(\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*)");
    for (const auto& item : items) {
      if (absl::StripAsciiWhitespace(item).empty()) continue;
      std::smatch m;
      if (std::regex_match(item, m, kRange)) {
        auto a = ToFloat(m[1].str(), what), b = ToFloat(m[2].str(), what);
        auto step = m[3].matched ? ToFloat(m[3].str(), what) : absl::StatusOr<double>(1.0);
        if (!a.ok() || !b.ok() || !step.ok()) return !a.ok() ? a.status() : !b.ok() ? b.status() : step.status();
        if (*step == 0) return absl::InvalidArgumentError(absl::StrCat(what, ": a range step of 0"));
        // np.arange(a, b + step, step): ceil((stop - start) / step) values start + i·step.
        const double n = std::ceil((*b + *step - *a) / *step);
        if (n > static_cast<double>(kMaxAxisValues)) return too_many();
        for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) out.push_back(FloatValue(*a + static_cast<double>(i) * *step));
      } else if (std::regex_match(item, m, kCount)) {
        auto a = ToFloat(m[1].str(), what), b = ToFloat(m[2].str(), what);
        auto n = m[3].matched ? ToInt(m[3].str(), what) : absl::StatusOr<int64_t>(1);
        if (!a.ok() || !b.ok() || !n.ok()) return !a.ok() ? a.status() : !b.ok() ? b.status() : n.status();
        if (*n > static_cast<int64_t>(kMaxAxisValues)) return too_many();
        for (double v : Linspace(*a, *b, *n)) out.push_back(FloatValue(v));
      } else {
        auto v = ToFloat(item, what);
        if (!v.ok()) return v.status();
        out.push_back(FloatValue(*v));
      }
    }
    return out;
  }
  if (axis.type == Type::kPermutations) {
    if (items.size() > 7) return absl::InvalidArgumentError(absl::StrCat(what, ": Prompt order of more than 7 tokens"));
    std::vector<size_t> idx(items.size());
    std::iota(idx.begin(), idx.end(), 0);
    do {
      Value v;
      for (size_t i : idx) v.list.push_back(items[i]);
      out.push_back(v);
    } while (std::next_permutation(idx.begin(), idx.end()));
    return out;
  }
  for (const auto& item : items) out.push_back(StrValue(item));
  if (out.size() > kMaxAxisValues) return too_many();
  return out;
}

std::string Label(const Axis& axis, const Value& v) {
  std::string value;
  switch (axis.type) {
    case Type::kNothing: return "";
    case Type::kInt: value = std::to_string(v.i); break;
    case Type::kFloat: value = engine::PythonFloat(std::round(v.f * 1e8) / 1e8); break;
    case Type::kPermutations: value = absl::StrJoin(v.list, ", "); break;
    case Type::kStr: value = v.s; break;
  }
  switch (axis.format) {
    case Format::kNothing: return "";
    case Format::kValue:
    case Format::kJoin: return value;
    case Format::kBasename: {
      const size_t slash = value.find_last_of("/\\");
      return slash == std::string::npos ? value : value.substr(slash + 1);
    }
    case Format::kLabel: break;
  }
  return absl::StrCat(axis.label, ": ", value);
}

struct AxisArgs {
  int type = 0;
  std::string values;
  std::vector<std::string> dropdown;
};

// script_args[i] as a number, bool, string or list, with WebUI's defaults for what is missing.
struct Args {
  const google::protobuf::ListValue& list;
  const google::protobuf::Value* At(int i) const { return i < list.values_size() ? &list.values(i) : nullptr; }
  bool Bool(int i, bool fallback) const {
    const auto* v = At(i);
    if (v == nullptr || v->has_null_value()) return fallback;
    if (v->has_bool_value()) return v->bool_value();
    if (v->has_number_value()) return v->number_value() != 0;
    if (v->has_string_value()) return absl::AsciiStrToLower(v->string_value()) == "true";
    return fallback;
  }
  std::string Text(int i) const {
    const auto* v = At(i);
    if (v == nullptr) return "";
    if (v->has_string_value()) return v->string_value();
    if (v->has_number_value()) return engine::PythonFloat(v->number_value());
    return "";
  }
  std::vector<std::string> List(int i) const {
    std::vector<std::string> out;
    const auto* v = At(i);
    if (v == nullptr || !v->has_list_value()) return out;
    for (const auto& item : v->list_value().values()) {
      if (item.has_string_value()) out.push_back(item.string_value());
      if (item.has_number_value()) out.push_back(engine::PythonFloat(item.number_value()));
    }
    return out;
  }
};

absl::StatusOr<const Axis*> AxisOf(const Args& args, int position, int fallback, bool img2img, const char* what) {
  const auto axes = AxesFor(img2img);
  const auto* v = args.At(position);
  int index = fallback;
  if (v != nullptr && v->has_number_value()) {
    index = static_cast<int>(v->number_value());
    if (static_cast<double>(index) != v->number_value() || index < 0 || index >= static_cast<int>(axes.size())) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", engine::PythonFloat(v->number_value()),
                                                     " is not an axis type index 0..", axes.size() - 1, " (",
                                                     img2img ? "img2img" : "txt2img", ": ",
                                                     absl::StrJoin(XyzAxisLabels(img2img), ", "), ")"));
    }
  } else if (v != nullptr && v->has_string_value()) {  // the UI's label
    index = -1;
    for (size_t i = 0; i < axes.size(); ++i) {
      if (absl::AsciiStrToLower(axes[i]->label) == absl::AsciiStrToLower(v->string_value())) index = static_cast<int>(i);
    }
    if (index < 0) {
      return absl::InvalidArgumentError(absl::StrCat(what, " '", v->string_value().substr(0, 64), "' is not an axis type: ",
                                                     absl::StrJoin(XyzAxisLabels(img2img), ", ")));
    }
  }
  const Axis* axis = axes[static_cast<size_t>(index)];
  if (axis->apply == nullptr && std::string(axis->label) != "Prompt S/R") {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", axis->label, "' is an axis this daemon does not apply"));
  }
  return axis;
}

}  // namespace

std::vector<std::string> XyzAxisLabels(bool img2img) {
  std::vector<std::string> out;
  for (const Axis* a : AxesFor(img2img)) out.push_back(a->label);
  return out;
}

absl::StatusOr<XyzPlan> PlanXyz(const v1::GenerateRequest& request, int max_cells) {
  const bool img2img = request.mode() == v1::MODE_IMG2IMG;
  const Args args{request.script_args()};
  const char* names[3] = {"X", "Y", "Z"};
  const Axis* axes[3];
  std::vector<Value> values[3];
  std::string texts[3];
  const bool csv_mode = args.Bool(17, false);
  for (int a = 0; a < 3; ++a) {
    const std::string what = absl::StrCat("script_args[", a * 3, "] (", names[a], " type)");
    auto axis = AxisOf(args, a * 3, a == 0 ? 1 : 0, img2img, what.c_str());
    if (!axis.ok()) return axis.status();
    axes[a] = *axis;
    const std::vector<std::string> dropdown = args.List(a * 3 + 2);
    texts[a] = (*axis)->choices && !csv_mode && !dropdown.empty() ? CsvLine(dropdown) : args.Text(a * 3 + 1);
    const std::string values_what = absl::StrCat(names[a], " values (", (*axis)->label, ")");
    auto parsed = AxisValues(**axis, args.Text(a * 3 + 1), dropdown, csv_mode, values_what.c_str());
    if (!parsed.ok()) return parsed.status();
    if (parsed->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(names[a], " values (", (*axis)->label, "): no values in '",
                                                     args.Text(a * 3 + 1).substr(0, 64), "'"));
    }
    values[a] = *std::move(parsed);
  }
  const bool draw_legend = args.Bool(9, true), include_sub_grids = args.Bool(11, false);
  const bool no_fixed_seeds = args.Bool(12, false);
  const bool vary[3] = {args.Bool(13, false), args.Bool(14, false), args.Bool(15, false)};
  const auto* margin_value = args.At(16);
  const int margin = margin_value != nullptr && margin_value->has_number_value() ? static_cast<int>(margin_value->number_value()) : 0;
  if (margin < 0 || margin > 500) return absl::InvalidArgumentError(absl::StrCat("script_args[16] margin_size ", margin, " is outside 0..500"));

  const size_t nx = values[0].size(), ny = values[1].size(), nz = values[2].size();
  const double cells = static_cast<double>(nx) * static_cast<double>(ny) * static_cast<double>(nz);
  if (cells > max_cells) {
    return absl::InvalidArgumentError(absl::StrCat("the X/Y/Z plot has ", nx, "x", ny, "x", nz, " = ",
                                                   static_cast<int64_t>(cells), " cells; a job may have at most ",
                                                   max_cells, " images"));
  }
  const double megapixels = std::round(cells * request.width() * request.height() / 1e6);
  if (megapixels >= 200) {
    return absl::InvalidArgumentError(absl::StrCat("Error: Resulting grid would be too large (", megapixels,
                                                    " MPixels) (max configured size is 200 MPixels)"));
  }

  v1::GenerateRequest base = request;
  base.clear_script_name();
  base.clear_script_args();
  // fix_seed: -1 seeds become one random seed for every cell; fix_axis_seeds: so do -1 values of the seed axes.
  if (!no_fixed_seeds) {
    if (!base.has_seed() || base.seed() == -1) base.set_seed(engine::RandomSeed());
    if (!base.has_subseed() || base.subseed() == -1) base.set_subseed(engine::RandomSeed());
    for (int a = 0; a < 3; ++a) {
      if (std::string(axes[a]->label) == "Seed" || std::string(axes[a]->label) == "Var. seed") {
        for (Value& v : values[a]) {
          if (v.i == -1) v.i = engine::RandomSeed();
        }
      }
    }
  }
  for (int a = 0; a < 3; ++a) {
    if (std::string(axes[a]->label) != "Prompt S/R") continue;
    const std::string& search = values[a][0].s;
    if (base.prompt().find(search) == std::string::npos && base.negative_prompt().find(search) == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("Prompt S/R did not find ", search.substr(0, 64),
                                                     " in prompt or negative prompt."));
    }
  }

  XyzPlan plan;
  plan.layout.xy_keys.emplace_back("Script", "X/Y/Z plot");
  for (int a = 0; a < 3; ++a) {
    std::vector<std::string>& labels = a == 0 ? plan.layout.x_labels : a == 1 ? plan.layout.y_labels : plan.layout.z_labels;
    for (const Value& v : values[a]) labels.push_back(Label(*axes[a], v));
    if (axes[a]->type == Type::kNothing) continue;
    auto& keys = a == 2 ? plan.layout.z_keys : plan.layout.xy_keys;
    keys.emplace_back(absl::StrCat(names[a], " Type"), axes[a]->label);
    keys.emplace_back(absl::StrCat(names[a], " Values"), texts[a]);
    if (!no_fixed_seeds && (std::string(axes[a]->label) == "Seed" || std::string(axes[a]->label) == "Var. seed")) {
      std::vector<std::string> fixed;
      for (const Value& v : values[a]) fixed.push_back(std::to_string(v.i));
      keys.emplace_back(absl::StrCat("Fixed ", names[a], " Values"), absl::StrJoin(fixed, ", "));
    }
  }
  plan.layout.draw_legend = draw_legend;
  plan.layout.include_sub_grids = include_sub_grids;
  plan.layout.margin = margin;

  // WebUI's loop order: z outside, then y, x innermost, unless one axis costs strictly more (it goes outside).
  const double cost[3] = {axes[0]->cost, axes[1]->cost, axes[2]->cost};
  int first = 2, second = 1;
  if (cost[0] > cost[1] && cost[0] > cost[2]) {
    first = 0;
    second = cost[1] > cost[2] ? 1 : 2;
  } else if (cost[1] > cost[0] && cost[1] > cost[2]) {
    first = 1;
    second = cost[0] > cost[2] ? 0 : 2;
  } else if (cost[2] > cost[0] && cost[2] > cost[1]) {
    first = 2;
    second = cost[0] > cost[1] ? 0 : 1;
  }
  const int third = 3 - first - second;
  const size_t n[3] = {nx, ny, nz};
  for (size_t i0 = 0; i0 < n[first]; ++i0) {
    for (size_t i1 = 0; i1 < n[second]; ++i1) {
      for (size_t i2 = 0; i2 < n[third]; ++i2) {
        size_t idx[3];
        idx[first] = i0;
        idx[second] = i1;
        idx[third] = i2;
        XyzCellRequest cell;
        cell.ix = static_cast<int>(idx[0]);
        cell.iy = static_cast<int>(idx[1]);
        cell.iz = static_cast<int>(idx[2]);
        cell.request = base;
        for (int a = 0; a < 3; ++a) {
          const Value& v = values[a][idx[a]];
          if (std::string(axes[a]->label) == "Prompt S/R") {
            const std::string& search = values[a][0].s;
            cell.request.set_prompt(absl::StrReplaceAll(cell.request.prompt(), {{search, v.s}}));
            cell.request.set_negative_prompt(absl::StrReplaceAll(cell.request.negative_prompt(), {{search, v.s}}));
            continue;
          }
          if (absl::Status s = axes[a]->apply(cell.request, v); !s.ok()) return s;
        }
        const int64_t xdim = vary[0] ? static_cast<int64_t>(nx) : 1, ydim = vary[1] ? static_cast<int64_t>(ny) : 1;
        int64_t seed = cell.request.seed();
        if (vary[0]) seed += cell.ix;
        if (vary[1]) seed += cell.iy * xdim;
        if (vary[2]) seed += cell.iz * xdim * ydim;
        cell.request.set_seed(seed);
        plan.cells.push_back(std::move(cell));
      }
    }
  }
  return plan;
}

}  // namespace atelier::server
