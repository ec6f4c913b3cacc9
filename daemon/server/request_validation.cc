#include "server/request_validation.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/text/prompt_parser.h"
#include "server/infotext_request.h"
#include "util/user_text.h"
#include "util/limits.h"
#include "util/user_text.h"

namespace atelier::server {
namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status CheckSide(const char* field, int value) {
  if (value < 64 || value > kMaxImageSide || value % 8 != 0) {
    return Invalid(absl::StrCat(field, " ", value, " is not allowed: use a multiple of 8 from 64 to ", kMaxImageSide));
  }
  return absl::OkStatus();
}

absl::Status CheckUnit(const char* field, float value) {
  if (!std::isfinite(value) || value < 0.0f || value > 1.0f) {
    return Invalid(absl::StrCat(field, " ", value, " is outside [0, 1]"));
  }
  return absl::OkStatus();
}

// A prompt's work and numbers bounded before the job is queued: its AND parts, and every emphasis weight finite and
// within kMaxEmphasisWeight (a thousand nested brackets overflow to NaN in the model: bad input, not an internal
// error).
absl::Status CheckPromptText(const char* field, const std::string& text, int steps) {
  if (text.size() > static_cast<size_t>(kMaxPromptBytes)) {
    return Invalid(absl::StrCat(field, " is ", text.size(), " bytes; the limit is ", kMaxPromptBytes));
  }
  if (text.empty()) return absl::OkStatus();
  const std::vector<engine::WeightedPrompt> parts = engine::GetMulticondPromptList(text);
  if (parts.size() > static_cast<size_t>(kMaxAndParts)) {
    return Invalid(absl::StrCat(field, " has ", parts.size(), " AND parts; at most ", kMaxAndParts));
  }
  size_t conditionings = 0;
  for (const auto& part : parts) {
    conditionings += engine::GetPromptSchedules(part.text, steps).size();
    if (conditionings > static_cast<size_t>(kMaxConditionings)) {
      return Invalid(absl::StrCat(field, " needs more than ", kMaxConditionings,
                                  " text conditionings (AND parts times prompt-editing switches over ", steps,
                                  " steps); simplify its [from:to:when] / [a|b] editing or its AND parts"));
    }
    if (!std::isfinite(part.weight) || std::abs(part.weight) > kMaxEmphasisWeight) {
      return Invalid(absl::StrCat(field, ": the AND weight ", part.weight, " is outside +-", kMaxEmphasisWeight));
    }
    auto runs = engine::ParsePromptAttention(part.text);
    if (!runs.ok()) return absl::Status(runs.status().code(), absl::StrCat(field, ": ", runs.status().message()));
    for (const auto& run : *runs) {
      if (run.weight == engine::kBreakWeight && run.text == engine::kBreakText) continue;
      if (!std::isfinite(run.weight) || std::abs(run.weight) > kMaxEmphasisWeight) {
        return Invalid(absl::StrCat(field, ": the emphasis weight ", run.weight, " of ", Quoted(run.text),
                                    " (from nested brackets or (text:weight)) is outside +-", kMaxEmphasisWeight));
      }
    }
  }
  return absl::OkStatus();
}

// Every float and double of the request (nested messages, override_settings and alwayson_scripts values included)
// is finite: NaN or infinity is refused naming the field.
absl::Status CheckFinite(const google::protobuf::Message& message, const std::string& path) {
  const google::protobuf::Reflection* reflection = message.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  // google.protobuf.Struct / Value (override_settings, alwayson_scripts) are named by their keys:
  // override_settings['eta_ddim'], not override_settings.fields[3].value.number_value.
  const std::string& type = message.GetDescriptor()->full_name();
  for (const auto* field : fields) {
    const bool transparent = type == "google.protobuf.Struct" || type == "google.protobuf.Value" ||
                             (field->containing_type() != nullptr && field->containing_type()->map_value() == field);
    const std::string name = transparent || path.empty() ? (path.empty() ? field->name() : path)
                                                          : absl::StrCat(path, ".", field->name());
    const bool repeated = field->is_repeated();
    const int count = repeated ? reflection->FieldSize(message, field) : 1;
    for (int i = 0; i < count; ++i) {
      std::string at = repeated ? absl::StrCat(name, "[", i, "]") : name;
      if (field->is_map()) {
        const google::protobuf::Message& entry = reflection->GetRepeatedMessage(message, field, i);
        const auto* key = entry.GetDescriptor()->FindFieldByNumber(1);
        if (key != nullptr && key->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_STRING) {
          at = absl::StrCat(name, "[", Quoted(entry.GetReflection()->GetString(entry, key)), "]");
        }
      }
      double value = 0;
      switch (field->cpp_type()) {
        case google::protobuf::FieldDescriptor::CPPTYPE_FLOAT:
          value = repeated ? reflection->GetRepeatedFloat(message, field, i) : reflection->GetFloat(message, field);
          break;
        case google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE:
          value = repeated ? reflection->GetRepeatedDouble(message, field, i) : reflection->GetDouble(message, field);
          break;
        case google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE: {
          const google::protobuf::Message& child =
              repeated ? reflection->GetRepeatedMessage(message, field, i) : reflection->GetMessage(message, field);
          if (absl::Status s = CheckFinite(child, at); !s.ok()) return s;
          continue;
        }
        default:
          continue;
      }
      if (!std::isfinite(value)) return Invalid(absl::StrCat(at, " is ", value, ": a finite number is needed"));
    }
  }
  return absl::OkStatus();
}

bool ValidJobId(const std::string& id) {
  if (id.empty() || id.size() > static_cast<size_t>(kMaxJobIdLength)) return false;
  for (const char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-' && c != '(' &&
        c != ')') {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::Status ValidateAndFillDefaults(v1::GenerateRequest& r, engine::LoraCatalog* loras) {
  if (r.infotext().size() > static_cast<size_t>(kMaxPromptBytes) * 3) {
    return Invalid(absl::StrCat("infotext is ", r.infotext().size(), " bytes; the limit is ", kMaxPromptBytes * 3));
  }
  if (absl::Status s = ApplyInfotext(r, loras); !s.ok()) return s;
  if (r.mode() == v1::MODE_UNSPECIFIED) r.set_mode(r.init_images_size() > 0 ? v1::MODE_IMG2IMG : v1::MODE_TXT2IMG);
  if (r.mode() == v1::MODE_IMG2IMG && r.init_images_size() == 0) {
    return Invalid("img2img needs at least one image in init_images");
  }
  if (absl::Status s = CheckFinite(r, ""); !s.ok()) return s;
  // Enums a client may send out of range: named with their valid values.
  if (!v1::Mode_IsValid(r.mode())) {
    return Invalid(absl::StrCat("mode ", static_cast<int>(r.mode()), " is not one of ", v1::Mode_Name(v1::MODE_TXT2IMG),
                                ", ", v1::Mode_Name(v1::MODE_IMG2IMG)));
  }
  if (!v1::PreviewMethod_IsValid(r.preview().method())) {
    return Invalid(absl::StrCat("preview.method ", static_cast<int>(r.preview().method()),
                                " is not a PreviewMethod (NONE, APPROX_CHEAP, APPROX_COMFYUI, TAESD, FULL)"));
  }
  if (!v1::ImageFormat_IsValid(r.preview().format()) || !v1::ImageFormat_IsValid(r.output().format())) {
    return Invalid(absl::StrCat("preview.format ", static_cast<int>(r.preview().format()), " / output.format ",
                                static_cast<int>(r.output().format()), ": an ImageFormat (PNG, JPEG, WEBP) is needed"));
  }
  for (const auto& [field, text] : {std::pair<const char*, const std::string*>{"prompt", &r.prompt()},
                                    {"negative_prompt", &r.negative_prompt()},
                                    {"hr_prompt", &r.hr_prompt()},
                                    {"hr_negative_prompt", &r.hr_negative_prompt()}}) {
    if (text->size() > static_cast<size_t>(kMaxPromptBytes)) {
      return Invalid(absl::StrCat(field, " is ", text->size(), " bytes; the limit is ", kMaxPromptBytes));
    }
  }

  if (!r.has_width()) r.set_width(512);
  if (!r.has_height()) r.set_height(512);
  if (auto s = CheckSide("width", r.width()); !s.ok()) return s;
  if (auto s = CheckSide("height", r.height()); !s.ok()) return s;

  if (!r.has_steps()) r.set_steps(50);
  if (r.steps() < 1 || r.steps() > kMaxSteps) {
    return Invalid(absl::StrCat("steps ", r.steps(), " is not allowed: use 1 to ", kMaxSteps));
  }
  // The prompts' AND parts, editing switches and emphasis, now that the step count is known.
  for (const auto& [field, text] : {std::pair<const char*, const std::string*>{"prompt", &r.prompt()},
                                    {"negative_prompt", &r.negative_prompt()},
                                    {"hr_prompt", &r.hr_prompt()},
                                    {"hr_negative_prompt", &r.hr_negative_prompt()}}) {
    if (absl::Status s = CheckPromptText(field, *text, r.steps()); !s.ok()) return s;
  }
  if (!r.has_batch_size()) r.set_batch_size(1);
  if (!r.has_n_iter()) r.set_n_iter(1);
  if (r.batch_size() < 1 || r.n_iter() < 1 ||
      static_cast<long long>(r.batch_size()) * r.n_iter() > kMaxImagesPerJob) {
    return Invalid(absl::StrCat("batch_size ", r.batch_size(), " x n_iter ", r.n_iter(),
                                " is not allowed: each at least 1, at most ", kMaxImagesPerJob, " images per job"));
  }
  if (!r.has_cfg_scale()) r.set_cfg_scale(7.0f);
  if (!std::isfinite(r.cfg_scale()) || r.cfg_scale() < 0.0f || r.cfg_scale() > 100.0f) {
    return Invalid(absl::StrCat("cfg_scale ", r.cfg_scale(), " is outside [0, 100]"));
  }
  if (!r.has_seed()) r.set_seed(-1);
  if (!r.has_subseed()) r.set_subseed(-1);
  if (r.seed() < -1) return Invalid(absl::StrCat("seed ", r.seed(), " is not allowed: use -1 (random) or >= 0"));
  if (r.subseed() < -1) {
    return Invalid(absl::StrCat("subseed ", r.subseed(), " is not allowed: use -1 (random) or >= 0"));
  }
  if (!r.has_subseed_strength()) r.set_subseed_strength(0.0f);
  if (auto s = CheckUnit("subseed_strength", r.subseed_strength()); !s.ok()) return s;
  if (!r.has_seed_resize_from_w()) r.set_seed_resize_from_w(-1);
  if (!r.has_seed_resize_from_h()) r.set_seed_resize_from_h(-1);
  // "Resize seed from" draws noise at that size: the same bound as the image's (0 or -1 = off).
  for (const auto& [field, value] : {std::pair<const char*, int>{"seed_resize_from_w", r.seed_resize_from_w()},
                                     {"seed_resize_from_h", r.seed_resize_from_h()}}) {
    if (value > kMaxImageSide) {
      return Invalid(absl::StrCat(field, " ", value, " is not allowed: use 0 (off) or at most ", kMaxImageSide));
    }
  }
  if (!r.has_denoising_strength()) r.set_denoising_strength(0.75f);
  if (auto s = CheckUnit("denoising_strength", r.denoising_strength()); !s.ok()) return s;
  if (!r.has_resize_mode()) r.set_resize_mode(0);
  if (r.resize_mode() < 0 || r.resize_mode() > 3) {
    return Invalid(absl::StrCat("resize_mode ", r.resize_mode(),
                                " is not allowed: 0 Just resize, 1 Crop and resize, 2 Resize and fill, "
                                "3 Just resize (latent upscale)"));
  }

  const auto& preview = r.preview();
  if (preview.every_n_steps() < 0) {
    return Invalid(absl::StrCat("preview.every_n_steps ", preview.every_n_steps(), " must be >= 0"));
  }
  if (preview.max_size() < 0 || preview.max_size() > kMaxImageSide) {
    return Invalid(absl::StrCat("preview.max_size ", preview.max_size(), " is outside [0, ", kMaxImageSide, "]"));
  }
  if (r.output().quality() < 0 || r.output().quality() > 100) {
    return Invalid(absl::StrCat("output.quality ", r.output().quality(), " is outside [0, 100]"));
  }
  if (!r.force_task_id().empty() && !ValidJobId(r.force_task_id())) {
    return Invalid(absl::StrCat("force_task_id must be 1 to ", kMaxJobIdLength,
                                " characters from A-Z a-z 0-9 . _ - ( )"));
  }
  if (r.alwayson_scripts().ByteSizeLong() + r.override_settings().ByteSizeLong() >
      static_cast<size_t>(kMaxScriptArgsBytes)) {
    return Invalid(absl::StrCat("alwayson_scripts and override_settings exceed ", kMaxScriptArgsBytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePluginArgs(const v1::GenerateRequest& request, const host::PluginRegistry& plugins) {
  for (const auto& [name, value] : request.alwayson_scripts().fields()) {
    if (plugins.Find(name) == nullptr) {
      return Invalid(absl::StrCat("always on script ", Quoted(name), " not found; loaded plugins: ", plugins.NameList()));
    }
  }
  return absl::OkStatus();
}

}  // namespace atelier::server
