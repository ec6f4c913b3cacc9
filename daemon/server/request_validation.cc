#include "server/request_validation.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/infotext_request.h"
#include "util/limits.h"

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

absl::Status ValidateAndFillDefaults(v1::GenerateRequest& r) {
  if (r.infotext().size() > static_cast<size_t>(kMaxPromptBytes) * 3) {
    return Invalid(absl::StrCat("infotext is ", r.infotext().size(), " bytes; the limit is ", kMaxPromptBytes * 3));
  }
  if (absl::Status s = ApplyInfotext(r); !s.ok()) return s;
  if (r.mode() == v1::MODE_UNSPECIFIED) r.set_mode(r.init_images_size() > 0 ? v1::MODE_IMG2IMG : v1::MODE_TXT2IMG);
  if (r.mode() == v1::MODE_IMG2IMG && r.init_images_size() == 0) {
    return Invalid("img2img needs at least one image in init_images");
  }
  if (r.prompt().size() > static_cast<size_t>(kMaxPromptBytes)) {
    return Invalid(absl::StrCat("prompt is ", r.prompt().size(), " bytes; the limit is ", kMaxPromptBytes));
  }
  if (r.negative_prompt().size() > static_cast<size_t>(kMaxPromptBytes)) {
    return Invalid(absl::StrCat("negative_prompt is ", r.negative_prompt().size(), " bytes; the limit is ",
                                kMaxPromptBytes));
  }

  if (!r.has_width()) r.set_width(512);
  if (!r.has_height()) r.set_height(512);
  if (auto s = CheckSide("width", r.width()); !s.ok()) return s;
  if (auto s = CheckSide("height", r.height()); !s.ok()) return s;

  if (!r.has_steps()) r.set_steps(50);
  if (r.steps() < 1 || r.steps() > kMaxSteps) {
    return Invalid(absl::StrCat("steps ", r.steps(), " is not allowed: use 1 to ", kMaxSteps));
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
      return Invalid(absl::StrCat("always on script '", name, "' not found; loaded plugins: ", plugins.NameList()));
    }
  }
  return absl::OkStatus();
}

}  // namespace atelier::server
