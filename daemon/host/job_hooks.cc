#include "host/job_hooks.h"

#include <exception>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "atelier/plugin_tensor.hpp"
#include "host/abi_handles.h"
#include "host/host_services.h"

namespace atelier::host {
namespace {

// Runs one hook call, turning a C++ exception that escaped a plugin into an error instead of a crash.
template <typename Call>
absl::Status CallHook(const Plugin& plugin, const char* hook, Call&& call) {
  atelier_error error{};
  atelier_status status = ATELIER_INTERNAL;
  try {
    status = call(&error);
  } catch (const std::exception& e) {
    std::snprintf(error.message, sizeof(error.message), "C++ exception across the C ABI: %s", e.what());
  } catch (...) {
    std::snprintf(error.message, sizeof(error.message), "unknown C++ exception across the C ABI");
  }
  return PluginStatus(status, plugin.name(), hook, error);
}

// Takes ownership of a tensor a plugin returned and checks it matches `like` in shape (when `like` is defined).
absl::StatusOr<at::Tensor> TakeOutput(DLManagedTensor*& out, const Plugin& plugin, const char* hook,
                                      const char* field, const at::Tensor& like) {
  at::Tensor tensor = plugin::Adopt(out);
  out = nullptr;
  if (!tensor.defined() || !like.defined()) return tensor;
  if (tensor.sizes() != like.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat("plugin '", plugin.name(), "' returned ", field, " of shape ",
                                                   c10::str(tensor.sizes()), " from ", hook, "; expected ",
                                                   c10::str(like.sizes())));
  }
  return tensor.to(like.device(), like.scalar_type());
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobHooks>> JobHooks::Begin(const PluginRegistry& registry, JobSink* sink,
                                                          const JobHookInfo& info,
                                                          const std::map<std::string, std::string>& args_by_plugin) {
  std::unique_ptr<JobHooks> hooks(new JobHooks());
  atelier_job_info c_info{};
  c_info.struct_size = sizeof(c_info);
  c_info.job_id = info.job_id.c_str();
  c_info.img2img = info.img2img ? 1 : 0;
  c_info.width = info.width;
  c_info.height = info.height;
  c_info.batch_size = info.batch_size;
  c_info.n_iter = info.n_iter;
  c_info.steps = info.steps;
  c_info.seed = info.seed;
  c_info.cfg_scale = info.cfg_scale;
  c_info.denoising_strength = info.denoising_strength;
  c_info.prompt = info.prompt.c_str();
  c_info.negative_prompt = info.negative_prompt.c_str();
  c_info.sampler_name = info.sampler_name.c_str();
  c_info.scheduler = info.scheduler.c_str();

  for (const auto& plugin : registry.plugins()) {
    const atelier_plugin_descriptor& d = plugin->descriptor();
    if (d.process == nullptr) continue;
    const auto args_it = args_by_plugin.find(absl::AsciiStrToLower(plugin->name()));
    const std::string& args = args_it == args_by_plugin.end() ? std::string("null") : args_it->second;
    auto job = std::make_unique<atelier_job>();
    job->sink = sink;
    job->plugin_name = plugin->name();
    atelier_job_state* state = nullptr;
    absl::Status status = CallHook(*plugin, "process", [&](atelier_error* err) {
      return d.process(plugin->state(), job.get(), &c_info, args.c_str(), &state, err);
    });
    if (!status.ok()) {
      if (state != nullptr) d.job_end(plugin->state(), state);
      return status;  // participants so far get job_end from ~JobHooks
    }
    if (state == nullptr) continue;
    hooks->has_cfg_ |= d.cfg_denoiser != nullptr || d.cfg_denoised != nullptr || d.cfg_after_cfg != nullptr;
    hooks->has_residuals_ |= d.unet_residuals != nullptr;
    hooks->has_block_ |= d.unet_block != nullptr;
    hooks->has_postprocess_ |= d.postprocess_frames != nullptr;
    hooks->has_export_ |= d.export_media != nullptr;
    hooks->participants_.push_back({plugin.get(), state, std::move(job)});
  }
  return hooks;
}

JobHooks::~JobHooks() {
  for (auto it = participants_.rbegin(); it != participants_.rend(); ++it) {
    try {
      it->plugin->descriptor().job_end(it->plugin->state(), it->state);
    } catch (...) {
      // A plugin must not throw across the ABI; nothing more can be done here.
    }
  }
}

std::vector<std::string> JobHooks::Participants() const {
  std::vector<std::string> names;
  for (const auto& p : participants_) names.push_back(p.plugin->name());
  return names;
}

absl::Status JobHooks::CfgDenoiser(CfgDenoiserTensors& t) {
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.cfg_denoiser == nullptr) continue;
    plugin::Borrow x(t.x), sigma(t.sigma), cond(t.text_cond), uncond(t.text_uncond), image_cond(t.image_cond);
    atelier_cfg_denoiser_params params{};
    params.struct_size = sizeof(params);
    params.sampling_step = t.sampling_step;
    params.total_sampling_steps = t.total_sampling_steps;
    params.cond_rows = t.cond_rows;
    params.x = x.get();
    params.sigma = sigma.get();
    params.text_cond = cond.get();
    params.text_uncond = uncond.get();
    params.image_cond = image_cond.get();
    absl::Status status = CallHook(*p.plugin, "cfg_denoiser", [&](atelier_error* err) {
      return d.cfg_denoiser(p.plugin->state(), p.state, &params, err);
    });
    // Outputs are adopted even on failure, so nothing leaks.
    auto x_out = TakeOutput(params.x_out, *p.plugin, "cfg_denoiser", "x", t.x);
    auto sigma_out = TakeOutput(params.sigma_out, *p.plugin, "cfg_denoiser", "sigma", t.sigma);
    auto cond_out = TakeOutput(params.text_cond_out, *p.plugin, "cfg_denoiser", "text_cond", at::Tensor());
    auto uncond_out = TakeOutput(params.text_uncond_out, *p.plugin, "cfg_denoiser", "text_uncond", at::Tensor());
    if (!status.ok()) return status;
    for (auto* out : {&x_out, &sigma_out, &cond_out, &uncond_out}) {
      if (!out->ok()) return out->status();
    }
    if (x_out->defined()) t.x = *x_out;
    if (sigma_out->defined()) t.sigma = *sigma_out;
    if (cond_out->defined()) t.text_cond = cond_out->to(t.text_cond.device(), t.text_cond.scalar_type());
    if (uncond_out->defined()) t.text_uncond = uncond_out->to(t.text_uncond.device(), t.text_uncond.scalar_type());
  }
  return absl::OkStatus();
}

absl::Status JobHooks::CfgDenoised(int sampling_step, int total_sampling_steps, int cond_rows, at::Tensor& x) {
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.cfg_denoised == nullptr) continue;
    plugin::Borrow x_in(x);
    atelier_cfg_denoised_params params{};
    params.struct_size = sizeof(params);
    params.sampling_step = sampling_step;
    params.total_sampling_steps = total_sampling_steps;
    params.cond_rows = cond_rows;
    params.x = x_in.get();
    absl::Status status = CallHook(*p.plugin, "cfg_denoised", [&](atelier_error* err) {
      return d.cfg_denoised(p.plugin->state(), p.state, &params, err);
    });
    auto out = TakeOutput(params.x_out, *p.plugin, "cfg_denoised", "x", x);
    if (!status.ok()) return status;
    if (!out.ok()) return out.status();
    if (out->defined()) x = *out;
  }
  return absl::OkStatus();
}

absl::Status JobHooks::CfgAfterCfg(int sampling_step, int total_sampling_steps, at::Tensor& x) {
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.cfg_after_cfg == nullptr) continue;
    plugin::Borrow x_in(x);
    atelier_cfg_after_cfg_params params{};
    params.struct_size = sizeof(params);
    params.sampling_step = sampling_step;
    params.total_sampling_steps = total_sampling_steps;
    params.x = x_in.get();
    absl::Status status = CallHook(*p.plugin, "cfg_after_cfg", [&](atelier_error* err) {
      return d.cfg_after_cfg(p.plugin->state(), p.state, &params, err);
    });
    auto out = TakeOutput(params.x_out, *p.plugin, "cfg_after_cfg", "x", x);
    if (!status.ok()) return status;
    if (!out.ok()) return out.status();
    if (out->defined()) x = *out;
  }
  return absl::OkStatus();
}

absl::Status JobHooks::UnetResiduals(int sampling_step, int total_sampling_steps, int cond_rows, const at::Tensor& x,
                                     const at::Tensor& timesteps, const at::Tensor& context,
                                     std::array<at::Tensor, ATELIER_UNET_RESIDUALS>& residuals) {
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.unet_residuals == nullptr) continue;
    plugin::Borrow x_in(x), t_in(timesteps), c_in(context);
    atelier_unet_residuals_params params{};
    params.struct_size = sizeof(params);
    params.sampling_step = sampling_step;
    params.total_sampling_steps = total_sampling_steps;
    params.cond_rows = cond_rows;
    params.x = x_in.get();
    params.timesteps = t_in.get();
    params.context = c_in.get();
    absl::Status status = CallHook(*p.plugin, "unet_residuals", [&](atelier_error* err) {
      return d.unet_residuals(p.plugin->state(), p.state, &params, err);
    });
    std::array<at::Tensor, ATELIER_UNET_RESIDUALS> taken;
    for (int i = 0; i < ATELIER_UNET_RESIDUALS; ++i) {
      taken[i] = plugin::Adopt(params.residual_out[i]);
      params.residual_out[i] = nullptr;
    }
    if (!status.ok()) return status;
    for (int i = 0; i < ATELIER_UNET_RESIDUALS; ++i) {
      if (!taken[i].defined()) continue;
      at::Tensor r = taken[i].to(x.device(), x.scalar_type());
      if (residuals[i].defined() && residuals[i].sizes() != r.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat("plugin '", p.plugin->name(), "' returned residual ", i,
                                                       " of shape ", c10::str(r.sizes()), "; another plugin's is ",
                                                       c10::str(residuals[i].sizes())));
      }
      residuals[i] = residuals[i].defined() ? residuals[i] + r : r;
    }
  }
  return absl::OkStatus();
}

absl::Status JobHooks::UnetBlock(int point, int block_kind, int block_index, int cond_rows, at::Tensor& hidden,
                                 const at::Tensor& context) {
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.unet_block == nullptr) continue;
    plugin::Borrow h_in(hidden), c_in(context);
    atelier_unet_block_params params{};
    params.struct_size = sizeof(params);
    params.point = point;
    params.block_kind = block_kind;
    params.block_index = block_index;
    params.cond_rows = cond_rows;
    params.hidden = h_in.get();
    params.context = c_in.get();
    absl::Status status = CallHook(*p.plugin, "unet_block", [&](atelier_error* err) {
      return d.unet_block(p.plugin->state(), p.state, &params, err);
    });
    auto out = TakeOutput(params.hidden_out, *p.plugin, "unet_block", "hidden", hidden);
    if (!status.ok()) return status;
    if (!out.ok()) return out.status();
    if (out->defined()) hidden = *out;
  }
  return absl::OkStatus();
}

absl::Status JobHooks::PostprocessFrames(at::Tensor& frames) {
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.postprocess_frames == nullptr) continue;
    plugin::Borrow f_in(frames);
    atelier_frames_params params{};
    params.struct_size = sizeof(params);
    params.frames = f_in.get();
    absl::Status status = CallHook(*p.plugin, "postprocess_frames", [&](atelier_error* err) {
      return d.postprocess_frames(p.plugin->state(), p.state, &params, err);
    });
    at::Tensor out = plugin::Adopt(params.frames_out);
    params.frames_out = nullptr;
    if (!status.ok()) return status;
    if (!out.defined()) continue;
    if (out.dim() != 4 || out.size(0) < 1 || out.size(1) != 3 || out.scalar_type() != at::kFloat ||
        !out.device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "plugin '", p.plugin->name(), "' returned frames ", std::string(c10::toString(out.scalar_type())), " ",
          c10::str(out.sizes()), " from postprocess_frames; expected float32 [n >= 1, 3, H, W] on the CPU"));
    }
    frames = out;
  }
  return absl::OkStatus();
}

absl::Status JobHooks::ExportMedia(const at::Tensor& frames, const std::vector<std::string>& infotexts) {
  std::vector<const char*> texts;
  for (const auto& s : infotexts) texts.push_back(s.c_str());
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.export_media == nullptr) continue;
    plugin::Borrow f_in(frames);
    atelier_export_params params{};
    params.struct_size = sizeof(params);
    params.frames = f_in.get();
    params.infotexts = texts.data();
    params.count = static_cast<int32_t>(texts.size());
    absl::Status status = CallHook(*p.plugin, "export", [&](atelier_error* err) {
      return d.export_media(p.plugin->state(), p.state, &params, err);
    });
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace atelier::host
