#include "jobs/job_check.h"

#include "jobs/job_loras.h"

#include "absl/strings/str_join.h"
#include "engine/pipeline/hires_fix.h"
#include "engine/upscale/upscaler_catalog.h"

#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "engine/models/taesd.h"
#include "image/image_formats.h"

namespace atelier::jobs {

absl::Status CheckJob(const JobSettings& settings, engine::ModelManager& models, const std::string& init_image,
                      const std::string& mask) {
  const std::shared_ptr<const engine::Sd1Weights> current = models.current();
  std::optional<engine::ModelFileEntry> checkpoint;
  if (!settings.checkpoint.empty()) {
    auto found = models.FindCheckpoint(settings.checkpoint);
    if (!found.ok()) {
      return absl::Status(found.status().code(),
                          absl::StrCat("override_settings.sd_model_checkpoint: ", found.status().message()));
    }
    checkpoint = *found;
  } else if (current == nullptr) {
    return absl::FailedPreconditionError(
        "no checkpoint is loaded: put an SD1.x .safetensors/.ckpt in <models-dir>/Stable-diffusion and load it "
        "(atelier load NAME), or name one in override_settings.sd_model_checkpoint");
  }
  if (settings.vae.has_value()) {
    if (!checkpoint) {
      auto found = models.FindCheckpoint(current->filename);
      if (!found.ok()) return found.status();
      checkpoint = *found;
    }
    auto vae = models.ResolveVae(*settings.vae, *checkpoint);
    if (!vae.ok()) {
      return absl::Status(vae.status().code(), absl::StrCat("override_settings.sd_vae: ", vae.status().message()));
    }
  }
  if (settings.params.hires.enabled && !engine::FindHiresUpscaler(settings.params.hires.upscaler).ok()) {
    auto found = engine::UpscalerCatalog(models.folders()).Find(settings.params.hires.upscaler, "hr_upscaler");
    if (!found.ok()) {
      if (absl::IsInvalidArgument(found.status())) {  // name the latent modes too
        std::vector<std::string> names = engine::HiresUpscalerNames();
        for (const auto& e : engine::UpscalerCatalog(models.folders()).List()) {
          if (!e.builtin && e.missing_file.empty()) names.push_back(e.name);
        }
        return absl::InvalidArgumentError(absl::StrCat("hr_upscaler '", settings.params.hires.upscaler.substr(0, 64),
                                                       "' not found; available: ", absl::StrJoin(names, ", ")));
      }
      return found.status();
    }
  }
  if (absl::Status s = CheckLoras(models.loras(), {settings.params.prompt, settings.params.hires.prompt},
                                  settings.lora_missing_warn);
      !s.ok()) {
    return s;
  }
  if (settings.img2img) {
    auto image = engine::DecodeImageRgb(init_image);
    if (!image.ok()) return absl::InvalidArgumentError(absl::StrCat("init_images[0]: ", image.status().message()));
    if (!mask.empty()) {
      auto decoded = engine::DecodeImage(mask);
      if (!decoded.ok()) return absl::InvalidArgumentError(absl::StrCat("mask: ", decoded.status().message()));
    }
  }
  if (settings.preview.method == engine::PreviewMethod::kTaesd) {
    const engine::ModelFolders* folders = models.folders();
    absl::Status missing = absl::FailedPreconditionError("TAESD previews need a models directory with VAE-approx/");
    if (folders != nullptr) {
      auto file = engine::Taesd::FindFile(folders->FolderPath(engine::ModelFolder::kVaeApprox),
                                          engine::TaesdPart::kDecoder);
      missing = file.ok() ? absl::OkStatus() : absl::FailedPreconditionError(file.status().message());
    }
    if (!missing.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("preview method TAESD: ", missing.message(),
                                                        "; or choose approx-cheap, approx-comfyui or full"));
    }
  }
  return absl::OkStatus();
}

}  // namespace atelier::jobs
