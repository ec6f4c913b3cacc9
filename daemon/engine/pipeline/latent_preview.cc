#include "engine/pipeline/latent_preview.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/models/nn_util.h"
#include "engine/models/taesd.h"
#include "engine/models/vae.h"
#include "util/user_text.h"

namespace atelier::engine {
namespace {

// Rows = latent channels 0..3, columns = R, G, B.
constexpr float kWebUiCheapSd1[4][3] = {
    {0.298f, 0.207f, 0.208f}, {0.187f, 0.286f, 0.173f}, {-0.158f, 0.189f, 0.264f}, {-0.184f, -0.271f, -0.473f}};
constexpr float kComfySd15[4][3] = {
    {0.3512f, 0.2297f, 0.3227f}, {0.3250f, 0.4974f, 0.2350f}, {-0.2829f, 0.1762f, 0.2721f}, {-0.2120f, -0.2616f, -0.7177f}};

at::Tensor Factors(const float (&f)[4][3], const at::Tensor& like) {
  return at::from_blob(const_cast<float*>(&f[0][0]), {4, 3}, at::kFloat).to(like.device());
}

std::string Lower(absl::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

constexpr char kChoices[] =
    "none, approx-cheap (WebUI \"Approx cheap\"), approx-comfyui (ComfyUI \"latent2rgb\"), taesd, full";

absl::Status CheckLatent(const at::Tensor& x0) {
  if (!x0.defined() || x0.dim() != 4 || x0.size(1) != 4 || x0.size(0) < 1 || x0.size(2) < 1 || x0.size(3) < 1) {
    return absl::InvalidArgumentError("a latent preview takes a latent [batch, 4, height, width]");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PreviewMethod> ParsePreviewMethod(absl::string_view name) {
  const std::string n = Lower(name);
  if (n == "none") return PreviewMethod::kNone;
  if (n == "approx-cheap" || n == "approx cheap") return PreviewMethod::kApproxCheap;
  if (n == "approx-comfyui" || n == "latent2rgb" || n == "auto") return PreviewMethod::kApproxComfy;
  if (n == "taesd") return PreviewMethod::kTaesd;
  if (n == "full") return PreviewMethod::kFull;
  if (n == "approx nn" || n == "approx-nn") {
    return absl::UnimplementedError(
        absl::StrCat("preview method ", Quoted(name, "\"", "\""), " (WebUI's VAE-approx model.pt) is not supported; choose one of: ", kChoices));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown preview method ", Quoted(name, "\"", "\""), "; choose one of: ", kChoices));
}

const char* PreviewMethodName(PreviewMethod method) {
  switch (method) {
    case PreviewMethod::kNone: return "none";
    case PreviewMethod::kApproxCheap: return "approx-cheap";
    case PreviewMethod::kApproxComfy: return "approx-comfyui";
    case PreviewMethod::kTaesd: return "taesd";
    case PreviewMethod::kFull: return "full";
  }
  return "?";
}

at::Tensor CheapApproximation(const at::Tensor& latent) {
  const at::Tensor x = latent.to(at::kFloat);
  return at::einsum("blxy,lr->brxy", {x, Factors(kWebUiCheapSd1, x)});
}

at::Tensor ComfyLatentToRgb(const at::Tensor& latent) {
  const at::Tensor x = latent.to(at::kFloat);
  return at::matmul(x.permute({0, 2, 3, 1}), Factors(kComfySd15, x));
}

at::Tensor WebUiToUint8(const at::Tensor& x) {
  const at::Tensor v = at::clamp(x.to(at::kFloat) * 0.5 + 0.5, 0.0, 1.0) * 255.0;
  return v.permute({0, 2, 3, 1}).to(at::kByte).contiguous().cpu();
}

at::Tensor ComfyToUint8Round(const at::Tensor& x) {
  return at::round((at::clamp(x.to(at::kFloat), -1.0, 1.0) + 1.0) * 127.5).to(at::kByte).contiguous().cpu();
}

at::Tensor ComfyToUint8Truncate(const at::Tensor& x) {
  return (at::clamp((x.to(at::kFloat) + 1.0) / 2.0, 0.0, 1.0) * 255.0).to(at::kByte).contiguous().cpu();
}

LatentPreviewer::LatentPreviewer(const Vae* vae, double scale_factor, const Taesd* taesd, absl::Status taesd_unavailable)
    : vae_(vae), scale_factor_(scale_factor), taesd_(taesd), taesd_unavailable_(std::move(taesd_unavailable)) {
  if (taesd_unavailable_.ok()) taesd_unavailable_ = absl::FailedPreconditionError("TAESD is not loaded");
}

absl::Status LatentPreviewer::Available(PreviewMethod method) const {
  switch (method) {
    case PreviewMethod::kTaesd:
      if (taesd_ == nullptr || !taesd_->has_decoder()) return taesd_unavailable_;
      return absl::OkStatus();
    case PreviewMethod::kFull:
      if (vae_ == nullptr) return absl::FailedPreconditionError("the full-VAE preview needs a loaded checkpoint");
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
}

absl::StatusOr<at::Tensor> LatentPreviewer::Render(PreviewMethod method, const at::Tensor& x0) const {
  if (method == PreviewMethod::kNone) return absl::InvalidArgumentError("preview method \"none\" renders nothing");
  if (auto s = CheckLatent(x0); !s.ok()) return s;
  if (auto s = Available(method); !s.ok()) return s;
  try {
    c10::InferenceMode inference;
    switch (method) {
      case PreviewMethod::kApproxCheap: return WebUiToUint8(CheapApproximation(x0));
      case PreviewMethod::kApproxComfy: return ComfyToUint8Round(ComfyLatentToRgb(x0));
      case PreviewMethod::kTaesd: {
        // WebUI maps TAESD's [0, 1] output to [-1, 1] (samples_to_images_tensor) and back; same float steps here.
        auto decoded = taesd_->Decode(x0);
        if (!decoded.ok()) return decoded.status();
        return WebUiToUint8(*decoded * 2.0 - 1.0);
      }
      case PreviewMethod::kFull: {
        auto decoded = vae_->Decode(x0.to(at::kFloat) * (1.0 / scale_factor_));
        if (!decoded.ok()) return decoded.status();
        return WebUiToUint8(*decoded);
      }
      case PreviewMethod::kNone: break;
    }
  } catch (const std::exception& e) {
    return StatusFromException(e, absl::StrCat("rendering a ", PreviewMethodName(method), " preview"));
  }
  return absl::InvalidArgumentError("unknown preview method");
}

}  // namespace atelier::engine
