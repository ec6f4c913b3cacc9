#include "engine/sampling/cfg_denoiser.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "engine/sampling/model_schedule.h"

namespace atelier::engine {
namespace {

[[noreturn]] void Stop(absl::Status status) { throw SamplingStopped{std::move(status)}; }

void Check(const absl::Status& status) {
  if (!status.ok()) Stop(status);
}

// WebUI's reconstruct_(multi)cond_batch: rows with fewer tokens are padded by repeating their last vector.
at::Tensor StackPadded(const std::vector<at::Tensor>& rows) {
  int64_t tokens = 0;
  for (const auto& r : rows) tokens = std::max(tokens, r.size(0));
  std::vector<at::Tensor> padded;
  padded.reserve(rows.size());
  for (const auto& r : rows) {
    if (r.size(0) == tokens) {
      padded.push_back(r);
    } else {
      padded.push_back(at::cat({r, r.slice(0, -1).expand({tokens - r.size(0), r.size(1)})}, 0));
    }
  }
  return at::stack(padded, 0);
}

}  // namespace

ScheduledCond ScheduledCond::Fixed(const at::Tensor& tensor) {
  ScheduledCond c;
  c.end_at_step.push_back(std::numeric_limits<int>::max());
  c.tensors.push_back(tensor);
  return c;
}

const at::Tensor& ScheduledCond::At(int call) const {
  for (size_t i = 0; i < end_at_step.size(); ++i) {
    if (call <= end_at_step[i]) return tensors[i];
  }
  return tensors.front();  // past every entry (DPM adaptive can be): WebUI's target_index stays 0
}

CfgDenoiser::CfgDenoiser(EpsModel model, const ModelSchedule* schedule, CfgConditioning conditioning,
                         CfgDenoiserOptions options)
    : model_(std::move(model)),
      schedule_(schedule),
      conditioning_(std::move(conditioning)),
      options_(options),
      images_(static_cast<int>(conditioning_.cond.size())) {
  if (schedule_ != nullptr) {
    const at::Tensor a = schedule_->alphas_cumprod().to(at::kCPU, at::kDouble).contiguous();
    alphas_.assign(a.data_ptr<double>(), a.data_ptr<double>() + a.numel());
  }
  single_parts_ = true;
  for (const auto& parts : conditioning_.cond) {
    first_cond_row_.push_back(cond_rows_);
    cond_rows_ += static_cast<int>(parts.size());
    if (parts.size() != 1 || parts[0].weight != conditioning_.cond[0][0].weight) single_parts_ = false;
  }
}

void CfgDenoiser::CheckInterrupt() const {
  if (options_.interrupt && options_.interrupt()) {
    Stop(absl::OkStatus());
  }
}

void CfgDenoiser::ReportStep(int step, int total_steps, double sigma, const at::Tensor& x,
                             const at::Tensor& denoised) {
  sampling_step_ = step;
  if (!progress_) return;
  SamplingProgress p;
  p.step = step;
  p.total_steps = total_steps;
  p.model_calls = calls_;
  p.sigma = sigma;
  p.x = &x;
  p.denoised = &denoised;
  p.preview = &last_preview_;
  progress_(p);
}

at::Tensor CfgDenoiser::Blend(const at::Tensor& latent) const {
  const at::Tensor keep = options_.latent_keep.to(latent.device(), latent.scalar_type());
  return latent * (1 - keep) + options_.init_latent.to(latent.device(), latent.scalar_type()) * keep;
}

at::Tensor CfgDenoiser::Denoise(const at::Tensor& x, double sigma) { return Evaluate(x, sigma, true); }

at::Tensor CfgDenoiser::PredictEps(const at::Tensor& x, double t) { return Evaluate(x, t, false); }

at::Tensor CfgDenoiser::Evaluate(const at::Tensor& x_given, double sigma_or_t, bool predict_x0) {
  CheckInterrupt();
  const bool blend = options_.latent_keep.defined();
  // Timestep samplers blend the noisy input with the clean original before the model (WebUI's
  // mask_before_denoising); k-diffusion samplers blend the prediction below.
  const at::Tensor x = blend && !predict_x0 ? Blend(x_given) : x_given;
  if (x.size(0) != images_) {
    Stop(absl::InternalError(absl::StrCat("denoiser got ", x.size(0), " latents for ", images_, " images")));
  }
  const int rows = cond_rows_ + images_;
  const int call = calls_;

  // Rows: each image once per AND part, then one unconditional row per image. The batched contexts are rebuilt
  // only when a prompt-editing schedule switches tensors.
  std::vector<const at::TensorImpl*> selection;
  selection.reserve(rows);
  for (int i = 0; i < images_; ++i) {
    for (const auto& part : conditioning_.cond[i]) selection.push_back(part.cond.At(call).unsafeGetTensorImpl());
  }
  for (int i = 0; i < images_; ++i) selection.push_back(conditioning_.uncond[i].At(call).unsafeGetTensorImpl());
  if (selection != context_selection_ || !row_index_.defined() || row_index_.device() != x.device()) {
    std::vector<int64_t> row_image;
    std::vector<at::Tensor> cond_tensors, uncond_tensors;
    for (int i = 0; i < images_; ++i) {
      for (const auto& part : conditioning_.cond[i]) {
        row_image.push_back(i);
        cond_tensors.push_back(part.cond.At(call));
      }
    }
    for (int i = 0; i < images_; ++i) {
      row_image.push_back(i);
      uncond_tensors.push_back(conditioning_.uncond[i].At(call));
    }
    row_index_ = at::tensor(row_image, at::TensorOptions().dtype(at::kLong)).to(x.device());
    first_row_index_ = at::tensor(std::vector<int64_t>(first_cond_row_.begin(), first_cond_row_.end()),
                                  at::TensorOptions().dtype(at::kLong))
                           .to(x.device());
    text_cond_ = StackPadded(cond_tensors).to(x.device());
    text_uncond_ = StackPadded(uncond_tensors).to(x.device());
    text_both_ = at::Tensor();
    context_selection_ = std::move(selection);
  }
  const at::Tensor& index = row_index_;

  JobExtension* const ext = options_.extension;
  const JobExtension::Points points = ext != nullptr ? ext->points() : JobExtension::Points{};
  CfgDenoiserInputs in;
  in.sampling_step = sampling_step_;
  in.total_sampling_steps = options_.total_sampling_steps;
  in.cond_rows = cond_rows_;
  in.x = images_ == 1 ? x.expand({rows, x.size(1), x.size(2), x.size(3)}) : x.index_select(0, index);
  in.sigma = at::full({rows}, sigma_or_t, x.options().dtype(at::kFloat));
  const at::TensorImpl* sigma_impl = in.sigma.unsafeGetTensorImpl();
  in.text_cond = text_cond_;
  in.text_uncond = text_uncond_;
  if (conditioning_.image_cond.defined()) in.image_cond = conditioning_.image_cond.index_select(0, index);
  if (points.cfg) Check(ext->BeforeModel(in));

  // CompVisDenoiser: eps = model(x * c_in, t(sigma)), x0 = x - sigma * eps. Timestep denoiser: eps = model(x, t).
  // Unless a hook replaced sigma, every row has the same noise level: scalars, not per-row tensors.
  const bool uniform_sigma = in.sigma.unsafeGetTensorImpl() == sigma_impl;
  at::Tensor model_in = in.x;
  at::Tensor t_in = in.sigma;
  if (predict_x0) {
    if (uniform_sigma) {
      const double sigma = static_cast<float>(sigma_or_t);
      model_in = in.x * (1.0 / std::sqrt(sigma * sigma + 1.0));
      t_in = at::full({rows}, schedule_->SigmaToT(sigma, options_.quantize), in.sigma.options());
    } else {
      const at::Tensor sigma = in.sigma.view({rows, 1, 1, 1});
      model_in = in.x * (sigma * sigma + 1).rsqrt();
      // The schedule's tables live on the CPU; only a hook's per-row sigmas take this path.
      t_in = schedule_->SigmaToT(in.sigma.to(at::kCPU), options_.quantize).to(in.sigma.options());
    }
  }
  if (in.image_cond.defined()) model_in = at::cat({model_in, in.image_cond.to(model_in.dtype())}, 1);

  at::Tensor out;
  auto run = [&](const at::Tensor& xs, const at::Tensor& ts, const at::Tensor& ctx, int call_cond_rows) {
    ModelCall model_call;
    model_call.sampling_step = sampling_step_;
    model_call.total_sampling_steps = options_.total_sampling_steps;
    model_call.cond_rows = call_cond_rows;
    model_call.x = xs;
    model_call.timesteps = ts;
    model_call.context = ctx;
    auto eps = points.model_call ? ext->CallModel(model_call, model_) : model_(model_call);
    // A model call stopped inside the UNet by Interrupt/Skip ends like an interrupt before the evaluation: the last
    // x0 stands.
    if (!eps.ok() && absl::IsCancelled(eps.status()) && options_.interrupt && options_.interrupt()) {
      Stop(absl::OkStatus());
    }
    if (!eps.ok()) Stop(eps.status());
    return *std::move(eps);
  };
  if (in.text_cond.size(1) == in.text_uncond.size(1)) {
    const bool cached = in.text_cond.unsafeGetTensorImpl() == text_cond_.unsafeGetTensorImpl() &&
                        in.text_uncond.unsafeGetTensorImpl() == text_uncond_.unsafeGetTensorImpl();
    if (cached && !text_both_.defined()) text_both_ = at::cat({text_cond_, text_uncond_}, 0);
    out = run(model_in, t_in, cached ? text_both_ : at::cat({in.text_cond, in.text_uncond}, 0), cond_rows_);
  } else {  // token counts differ: WebUI runs the conditional and unconditional rows separately
    out = at::cat({run(model_in.slice(0, 0, cond_rows_), t_in.slice(0, 0, cond_rows_), in.text_cond, cond_rows_),
                   run(model_in.slice(0, cond_rows_), t_in.slice(0, cond_rows_), in.text_uncond, 0)},
                  0);
  }
  ++calls_;
  if (predict_x0) {
    out = uniform_sigma ? at::sub(in.x, out, static_cast<float>(sigma_or_t))
                        : in.x - out * in.sigma.view({rows, 1, 1, 1});
    if (schedule_->is_lcm()) {
      // WebUI's LCMCompVisDenoiser: consistency-model scalings of x0 at the (quantized) timestep * 10.
      const at::Tensor ts = t_in.view({rows, 1, 1, 1}).to(at::kFloat) * 10.0;
      const at::Tensor denom = ts * ts + 0.25;
      out = out * (ts / denom.sqrt()) + in.x * (0.25 / denom);
    }
  }

  if (points.cfg) Check(ext->AfterModel(sampling_step_, options_.total_sampling_steps, cond_rows_, out));
  // One reduction: NaN or infinity anywhere makes the sum non-finite (WebUI's test_for_nans, as an error).
  if (options_.check_nans && !std::isfinite(out.sum(at::kFloat).item<double>())) {
    Stop(absl::InternalError(absl::StrCat(
        "the model produced NaN or infinite values at its evaluation ", calls_, " (around sampling step ",
        sampling_step_ + 1,
        "): the precision is not enough for this checkpoint or setting (try --dtype float32), or the checkpoint "
        "is broken")));
  }

  // CFG mix: uncond + sum_k (cond_k - uncond) * (w_k * scale), as WebUI's combine_denoised.
  const at::Tensor uncond = out.slice(0, cond_rows_);
  const double scale = options_.cfg_scale * scale_multiplier_;
  at::Tensor mixed;
  if (single_parts_) {
    // One part per image, one weight: all images at once.
    mixed = at::add(uncond, out.slice(0, 0, cond_rows_) - uncond, conditioning_.cond[0][0].weight * scale);
  } else {
    mixed = uncond.clone();
    for (int i = 0; i < images_; ++i) {
      at::Tensor target = mixed[i];
      for (size_t k = 0; k < conditioning_.cond[i].size(); ++k) {
        const int row = first_cond_row_[i] + static_cast<int>(k);
        target.add_((out[row] - uncond[i]) * (conditioning_.cond[i][k].weight * scale));
      }
    }
  }
  if (!predict_x0) last_uncond_ = uncond;

  // The x0 of each image's first conditional row: the live preview and what an interrupted job returns.
  const at::Tensor first_rows =
      images_ == cond_rows_ ? out.slice(0, 0, images_) : out.index_select(0, first_row_index_);
  if (predict_x0) {
    last_preview_ = first_rows;
  } else {
    const double a = alphas_[std::clamp(static_cast<int>(sigma_or_t), 0, static_cast<int>(alphas_.size()) - 1)];
    last_preview_ = (x - first_rows * std::sqrt(1.0 - a)) / std::sqrt(a);
  }

  if (blend && predict_x0) mixed = Blend(mixed);
  if (points.cfg) Check(ext->AfterCfg(sampling_step_, options_.total_sampling_steps, mixed));
  return mixed;
}

}  // namespace atelier::engine
