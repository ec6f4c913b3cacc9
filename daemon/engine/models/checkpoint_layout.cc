#include "engine/models/checkpoint_layout.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "util/log.h"

namespace atelier::engine {
namespace {

constexpr const char* kUnet = "model.diffusion_model.";
constexpr const char* kVae = "first_stage_model.";
constexpr const char* kClip = "cond_stage_model.transformer.";

// The LatentDiffusion schedule buffers (DDPM.register_schedule).
constexpr const char* kScheduleBuffers[] = {
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "logvar"};

bool AnyStartsWith(const TensorIndex& index, absl::string_view prefix, std::string* first = nullptr) {
  for (const auto& t : index.tensors) {
    if (absl::StartsWith(t.name, prefix)) {
      if (first) *first = t.name;
      return true;
    }
  }
  return false;
}

bool AnyContains(const TensorIndex& index, absl::string_view part, std::string* first = nullptr) {
  for (const auto& t : index.tensors) {
    if (absl::StrContains(t.name, part)) {
      if (first) *first = t.name;
      return true;
    }
  }
  return false;
}

absl::Status Unsupported(absl::string_view label, absl::string_view what, absl::string_view evidence) {
  return absl::InvalidArgumentError(absl::StrCat("'", label, "': unsupported architecture: ", what, " (found ",
                                                 evidence, "); Atelier runs SD1.x models"));
}

// Shape entry `dim` of a tensor, or -1.
std::int64_t Dim(const TensorIndex& index, absl::string_view name, std::size_t dim) {
  const TensorInfo* t = index.Find(name);
  return t != nullptr && t->shape.size() > dim ? t->shape[dim] : -1;
}

// The cross-attention context width of the first UNet attention found under `prefix`.
std::int64_t ContextDim(const TensorIndex& index, absl::string_view prefix) {
  for (const auto& t : index.tensors) {
    if (absl::StartsWith(t.name, prefix) && absl::EndsWith(t.name, ".attn2.to_k.weight") && t.shape.size() == 2) {
      return t.shape[1];
    }
  }
  return -1;
}

bool IsSchedule(absl::string_view name) {
  for (const char* b : kScheduleBuffers) {
    if (name == b) return true;
  }
  return false;
}

absl::StatusOr<Layout> Sd1Checkpoint(const TensorIndex& index, absl::string_view label) {
  Layout layout;
  layout.type = ModelType::kSd1Checkpoint;
  layout.unet_in_channels = static_cast<int>(Dim(index, "model.diffusion_model.input_blocks.0.0.weight", 1));
  switch (layout.unet_in_channels) {
    case 4: layout.architecture = "SD1.x"; break;
    case 9: layout.architecture = "SD1.x inpainting"; break;
    case 8: return Unsupported(label, "SD1.x InstructPix2Pix", "a UNet with 8 input channels");
    default:
      return Unsupported(label, absl::StrCat("a UNet with ", layout.unet_in_channels, " input channels"),
                         "model.diffusion_model.input_blocks.0.0.weight");
  }
  if (ContextDim(index, kUnet) == 1024) {
    return Unsupported(label, "SD2.x", "UNet cross-attention of width 1024 (OpenCLIP)");
  }
  layout.old_clip_naming = AnyStartsWith(index, "cond_stage_model.transformer.embeddings.");
  layout.has_text_encoder = layout.old_clip_naming || AnyStartsWith(index, "cond_stage_model.transformer.text_model.");
  layout.has_vae = AnyStartsWith(index, kVae);
  for (const auto& t : index.tensors) {
    if (absl::StartsWith(t.name, "model_ema.")) {
      ++layout.ema_tensors;
    } else if (!absl::StartsWith(t.name, kUnet) && !absl::StartsWith(t.name, kVae) &&
               !absl::StartsWith(t.name, kClip) && !IsSchedule(t.name)) {
      ++layout.ignored_tensors;
    }
  }
  if (layout.ema_tensors > 0 || layout.ignored_tensors > 0) {
    LogDebug(absl::StrCat(label, ": ignoring ", layout.ema_tensors, " model_ema.* and ", layout.ignored_tensors,
                          " other tensors"));
  }
  return layout;
}

}  // namespace

std::string NormalizeSd1Key(const std::string& name) {
  static constexpr std::pair<const char*, const char*> kReplacements[] = {
      {"cond_stage_model.transformer.embeddings.", "cond_stage_model.transformer.text_model.embeddings."},
      {"cond_stage_model.transformer.encoder.", "cond_stage_model.transformer.text_model.encoder."},
      {"cond_stage_model.transformer.final_layer_norm.", "cond_stage_model.transformer.text_model.final_layer_norm."},
  };
  for (const auto& [from, to] : kReplacements) {
    if (absl::StartsWith(name, from)) return absl::StrCat(to, name.substr(std::string(from).size()));
  }
  return name;
}

absl::StatusOr<Layout> DetectLayout(const TensorIndex& index, absl::string_view label) {
  std::string evidence;
  // Other generations first, so their files never pass as SD1.
  if (AnyStartsWith(index, "conditioner.embedders.", &evidence) ||
      AnyStartsWith(index, "model.diffusion_model.label_emb.", &evidence)) {
    return Unsupported(label, "SDXL", evidence);
  }
  if (AnyStartsWith(index, "model.diffusion_model.joint_blocks.", &evidence)) return Unsupported(label, "SD3", evidence);
  if (AnyStartsWith(index, "model.diffusion_model.double_blocks.", &evidence) ||
      AnyStartsWith(index, "double_blocks.", &evidence)) {
    return Unsupported(label, "Flux", evidence);
  }
  if (AnyStartsWith(index, "cond_stage_model.model.", &evidence)) return Unsupported(label, "SD2.x", evidence);

  // ControlNet (1.0 files also carry a whole SD model: the control_model.* keys decide).
  const bool control_prefixed = index.Find("control_model.input_hint_block.0.weight") != nullptr;
  if (control_prefixed || index.Find("input_hint_block.0.weight") != nullptr) {
    const std::string prefix = control_prefixed ? "control_model." : "";
    if (index.Find(prefix + "label_emb.0.0.bias") != nullptr) return Unsupported(label, "SDXL ControlNet", "label_emb");
    const std::int64_t context = ContextDim(index, prefix + "input_blocks.");
    if (context == 1024) return Unsupported(label, "SD2.x ControlNet", "cross-attention of width 1024");
    Layout layout;
    layout.type = ModelType::kControlNet;
    layout.variant = control_prefixed ? "control_model." : "stripped";
    layout.architecture = "ControlNet (SD1.x)";
    return layout;
  }
  // A ControlNet in diffusers' ControlNetModel layout (diffusion_pytorch_model.safetensors): the ControlNet plugin
  // maps its names onto the ldm ones (sd-webui-controlnet's controlnet_diffusers.py does the same).
  if (index.Find("controlnet_cond_embedding.conv_in.weight") != nullptr) {
    if (index.Find("add_embedding.linear_1.weight") != nullptr) {
      return Unsupported(label, "SDXL ControlNet", "add_embedding");
    }
    const std::int64_t context = ContextDim(index, "down_blocks.");
    if (context == 1024) return Unsupported(label, "SD2.x ControlNet", "cross-attention of width 1024");
    Layout layout;
    layout.type = ModelType::kControlNet;
    layout.variant = "diffusers";
    layout.architecture = "ControlNet (SD1.x)";
    return layout;
  }

  if (index.Find("model.diffusion_model.input_blocks.0.0.weight") != nullptr) return Sd1Checkpoint(index, label);

  if (AnyContains(index, "motion_modules.", &evidence)) {
    Layout layout;
    layout.type = ModelType::kMotionModule;
    const TensorInfo* pe = nullptr;
    for (const auto& t : index.tensors) {
      if (absl::EndsWith(t.name, ".pe")) {  // pos_encoder.pe
        pe = &t;
        break;
      }
    }
    if (AnyContains(index, "mid_block")) {
      layout.variant = pe != nullptr ? "v2" : "AnimateLCM";
    } else if (AnyContains(index, "down_blocks.3")) {
      layout.variant = pe != nullptr && pe->shape.size() >= 2 && pe->shape[1] == 32 ? "v3" : "v1";
    } else {
      return Unsupported(label, "an SDXL AnimateDiff motion module", evidence);
    }
    layout.architecture = absl::StrCat("AnimateDiff motion module ", layout.variant, " (SD1.x)");
    return layout;
  }

  for (const char* prefix : {"module.", ""}) {
    if (index.Find(absl::StrCat(prefix, "block0.conv0.0.0.weight")) != nullptr) {
      Layout layout;
      layout.type = ModelType::kRife;
      layout.variant = index.Find(absl::StrCat(prefix, "encode.cnn0.weight")) != nullptr ? "4.25" : "4.6";
      layout.architecture = absl::StrCat("RIFE ", layout.variant);
      return layout;
    }
  }

  for (const char* prefix : {"", "first_stage_model."}) {
    if (index.Find(absl::StrCat(prefix, "encoder.conv_in.weight")) != nullptr &&
        index.Find(absl::StrCat(prefix, "decoder.conv_out.weight")) != nullptr &&
        index.Find(absl::StrCat(prefix, "quant_conv.weight")) != nullptr) {
      Layout layout;
      layout.type = ModelType::kVae;
      layout.variant = prefix;
      layout.architecture = "VAE (SD1.x)";
      layout.has_vae = true;
      return layout;
    }
  }
  if (AnyStartsWith(index, "encoder.down_blocks.", &evidence)) {
    return Unsupported(label, "a VAE in diffusers layout (use the WebUI/ldm VAE file)", evidence);
  }

  // TAESD: numbered Sequential layers, as one file (encoder.N / decoder.N) or separate files.
  const bool taesd_decoder = Dim(index, "1.weight", 1) == 4 || Dim(index, "decoder.1.weight", 1) == 4;
  const bool taesd_encoder = Dim(index, "0.weight", 1) == 3 || Dim(index, "encoder.0.weight", 1) == 3;
  if (taesd_decoder || taesd_encoder) {
    Layout layout;
    layout.type = ModelType::kTaesd;
    layout.variant = taesd_decoder && taesd_encoder ? "encoder+decoder" : taesd_decoder ? "decoder" : "encoder";
    layout.architecture = absl::StrCat("TAESD ", layout.variant);
    return layout;
  }

  if (AnyStartsWith(index, "clip_g", &evidence) || AnyStartsWith(index, "clip_l", &evidence)) {
    return Unsupported(label, "an SDXL embedding", evidence);
  }
  const TensorInfo* vectors = nullptr;
  std::string variant;
  for (const auto& t : index.tensors) {
    if (absl::StartsWith(t.name, "string_to_param.")) {
      vectors = &t;
      variant = "pt";
      break;
    }
  }
  if (vectors == nullptr && (vectors = index.Find("emb_params")) != nullptr) variant = "safetensors";
  if (vectors != nullptr) {
    Layout layout;
    layout.type = ModelType::kEmbedding;
    layout.variant = variant;
    layout.embedding_vectors = vectors->shape.size() == 2 ? static_cast<int>(vectors->shape[0]) : 1;
    layout.embedding_dim = static_cast<int>(vectors->shape.empty() ? 0 : vectors->shape.back());
    layout.architecture = absl::StrCat("textual inversion embedding (", layout.embedding_vectors, " vector",
                                       layout.embedding_vectors == 1 ? "" : "s", ")");
    return layout;
  }

  std::vector<std::string> first;
  for (const auto& t : index.tensors) {
    if (first.size() == 3) break;
    first.push_back(t.name);
  }
  return absl::InvalidArgumentError(absl::StrCat("'", label, "' is not a model Atelier recognises (",
                                                 index.tensors.size(), " tensors, e.g. ",
                                                 first.empty() ? "none" : absl::StrJoin(first, ", "), ")"));
}

}  // namespace atelier::engine
