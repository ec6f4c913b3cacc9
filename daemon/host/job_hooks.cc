#include "host/job_hooks.h"

#include <algorithm>
#include <exception>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "atelier/sdk/tensor.h"
#include "host/abi_handles.h"
#include "host/hook_watchdog.h"
#include "host/host_services.h"

namespace atelier::host {
namespace {

// Runs one hook call, turning a C++ exception that escaped a plugin into an error instead of a crash.
template <typename Call>
absl::Status CallHook(const Plugin& plugin, const char* hook, Call&& call) {
  atelier_error error{};
  atelier_status status = ATELIER_INTERNAL;
  const HookScope scope(plugin.name(), hook);  // for the hang watchdog and the crash reporter
  try {
    status = call(&error);
  } catch (const std::exception& e) {
    std::snprintf(error.message, sizeof(error.message), "C++ exception across the C ABI: %s", e.what());
  } catch (...) {
    std::snprintf(error.message, sizeof(error.message), "unknown C++ exception across the C ABI");
  }
  return PluginStatus(status, plugin.name(), hook, error);
}

// Takes ownership of a tensor a plugin returned (an undefined tensor for NULL). A tensor ATen cannot take (another
// device type, vector lanes) is released with its deleter and reported, never leaked or thrown.
absl::StatusOr<at::Tensor> SafeAdopt(DLManagedTensor*& out, const Plugin& plugin, const char* hook) {
  DLManagedTensor* taken = out;
  out = nullptr;
  try {
    return sdk::Adopt(taken);
  } catch (const std::exception& e) {
    if (taken != nullptr && taken->deleter != nullptr) taken->deleter(taken);
    return absl::InvalidArgumentError(
        absl::StrCat("plugin '", plugin.name(), "' returned a tensor from ", hook, " the host cannot take: ", e.what()));
  }
}

// Takes ownership of a tensor a plugin returned and checks it matches `like` in shape (when `like` is defined).
absl::StatusOr<at::Tensor> TakeOutput(DLManagedTensor*& out, const Plugin& plugin, const char* hook,
                                      const char* field, const at::Tensor& like) {
  auto adopted = SafeAdopt(out, plugin, hook);
  if (!adopted.ok()) return adopted.status();
  at::Tensor tensor = *adopted;
  if (!tensor.defined() || !like.defined()) return tensor;
  if (tensor.sizes() != like.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat("plugin '", plugin.name(), "' returned ", field, " of shape ",
                                                   c10::str(tensor.sizes()), " from ", hook, "; expected ",
                                                   c10::str(like.sizes())));
  }
  return tensor.to(like.device(), like.scalar_type());
}

atelier_pass_info CPassInfo(const engine::PassInfo& pass) {
  atelier_pass_info info{};
  info.struct_size = sizeof(info);
  info.pass = static_cast<int32_t>(pass.pass);
  info.batch = pass.batch;
  info.batches = pass.batches;
  info.images = pass.images;
  info.width = pass.width;
  info.height = pass.height;
  info.steps = pass.steps;
  info.crop_x = pass.crop_x;
  info.crop_y = pass.crop_y;
  info.crop_width = pass.crop_width;
  info.crop_height = pass.crop_height;
  return info;
}

// Sets `*slot` to `value` for the life of the scope.
class ScopedDraw {
 public:
  ScopedDraw(const engine::NoiseDraw*& slot, const engine::NoiseDraw& value) : slot_(slot), old_(slot) {
    slot_ = &value;
  }
  ~ScopedDraw() { slot_ = old_; }
  ScopedDraw(const ScopedDraw&) = delete;
  ScopedDraw& operator=(const ScopedDraw&) = delete;

 private:
  const engine::NoiseDraw*& slot_;
  const engine::NoiseDraw* old_;
};


}  // namespace

absl::StatusOr<std::unique_ptr<JobHooks>> JobHooks::Begin(const PluginRegistry& registry, JobSink* sink,
                                                          const JobHookInfo& info,
                                                          const std::map<std::string, std::string>& args_by_plugin) {
  std::unique_ptr<JobHooks> hooks(new JobHooks());
  hooks->registry_ = &registry;
  // The job info's strings and images stay valid until job_end (the header's promise): the hooks own them.
  hooks->info_ = info;
  const JobHookInfo& kept = hooks->info_;
  hooks->init_image_ = std::make_unique<sdk::Borrow>(kept.init_image);
  hooks->mask_ = std::make_unique<sdk::Borrow>(kept.mask);
  atelier_job_info& c_info = hooks->c_info_;
  c_info.struct_size = sizeof(c_info);
  c_info.job_id = kept.job_id.c_str();
  c_info.img2img = kept.img2img ? 1 : 0;
  c_info.width = kept.width;
  c_info.height = kept.height;
  c_info.batch_size = kept.batch_size;
  c_info.n_iter = kept.n_iter;
  c_info.steps = kept.steps;
  c_info.seed = kept.seed;
  c_info.cfg_scale = static_cast<float>(kept.cfg_scale);
  c_info.denoising_strength = static_cast<float>(kept.denoising_strength);
  c_info.prompt = kept.prompt.c_str();
  c_info.negative_prompt = kept.negative_prompt.c_str();
  c_info.sampler_name = kept.sampler_name.c_str();
  c_info.scheduler = kept.scheduler.c_str();
  c_info.cfg_scale_d = kept.cfg_scale;
  c_info.denoising_strength_d = kept.denoising_strength;
  c_info.subseed = kept.subseed;
  c_info.subseed_strength = kept.subseed_strength;
  c_info.clip_skip = kept.clip_skip;
  c_info.hires = kept.hires ? 1 : 0;
  c_info.hires_width = kept.hires_width;
  c_info.hires_height = kept.hires_height;
  c_info.init_image = hooks->init_image_->get();
  c_info.mask = hooks->mask_->get();
  c_info.inpaint_full_res = kept.inpaint_full_res ? 1 : 0;
  c_info.checkpoint_title = kept.checkpoint_title.c_str();
  c_info.resize_mode = kept.resize_mode;
  c_info.loras_json = kept.loras_json.c_str();
  hooks->given_args_ = args_by_plugin;

  hooks->in_process_ = true;
  for (const Plugin* plugin : registry.InHookOrder()) {
    const atelier_plugin_descriptor& d = plugin->descriptor();
    const std::string key = absl::AsciiStrToLower(plugin->name());
    hooks->processed_.push_back(key);
    if (d.process == nullptr) continue;
    const auto fed = hooks->fed_args_.find(key);
    const auto given = args_by_plugin.find(key);
    const std::string& args = fed != hooks->fed_args_.end() ? fed->second
                              : given != args_by_plugin.end() ? given->second
                                                              : std::string("null");
    auto job = std::make_unique<atelier_job>();
    job->sink = sink;
    job->plugin_name = plugin->name();
    job->hooks = hooks.get();
    JobHooks* self = hooks.get();
    job->call_plugin = [&registry, sink, self](const std::string& name, const std::string& method,
                                              const std::string& args) {
      return InvokePlugin(registry, name, method, args, sink, self);
    };
    job->vae_encode = info.vae_encode;
    job->text_condition = info.text_condition;
    atelier_job_state* state = nullptr;
    absl::Status status = CallHook(*plugin, "process", [&](atelier_error* err) {
      return d.process(plugin->state(), job.get(), &c_info, args.c_str(), &state, err);
    });
    if (!status.ok()) {
      if (state != nullptr && d.job_end != nullptr) d.job_end(plugin->state(), state);
      return status;  // participants so far get job_end from ~JobHooks
    }
    if (state == nullptr) continue;
    hooks->has_cfg_ |= d.cfg_denoiser != nullptr || d.cfg_denoised != nullptr || d.cfg_after_cfg != nullptr;
    hooks->has_residuals_ |= d.unet_residuals != nullptr;
    hooks->has_block_ |= d.unet_block != nullptr;
    hooks->has_attention_ |= d.self_attention != nullptr;
    hooks->has_block_end_ |= d.unet_block_end != nullptr;
    hooks->has_postprocess_ |= d.postprocess_frames != nullptr;
    hooks->has_export_ |= d.export_media != nullptr;
    hooks->has_shape_ |= d.shape_job != nullptr;
    hooks->has_schedule_ |= d.schedule != nullptr;
    hooks->has_pass_ |= d.pass_started != nullptr;
    hooks->has_model_call_ |= d.model_call != nullptr;
    hooks->has_frame_ |= d.frame != nullptr || d.frames_finish != nullptr;
    hooks->has_init_latent_ |= d.init_latent != nullptr;
    hooks->has_sample_ |= d.sample != nullptr;
    hooks->participants_.push_back({plugin, state, std::move(job)});
  }
  hooks->in_process_ = false;
  return hooks;
}

JobHooks::~JobHooks() {
  for (auto it = participants_.rbegin(); it != participants_.rend(); ++it) {
    if (it->plugin->descriptor().job_end == nullptr) continue;
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

engine::JobExtension::Points JobHooks::points() const {
  Points points;
  points.shape = has_shape_;
  points.schedule = has_schedule_;
  points.pass = has_pass_ || has_residuals_;  // unet_residuals carries the pass kind
  points.cfg = has_cfg_;
  points.model_call = has_residuals_ || has_block_ || has_model_call_ || has_attention_ || has_block_end_;
  points.infotext = true;  // add_infotext may be called from any hook
  points.init_latent = has_init_latent_;
  points.sample = has_sample_;
  return points;
}

absl::Status JobHooks::ShapeJob(engine::JobShape& shape) {
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.shape_job == nullptr) continue;
    atelier_job_shape c{};
    c.struct_size = sizeof(c);
    c.batch_size = shape.batch_size;
    c.n_iter = shape.n_iter;
    c.steps = shape.steps;
    c.width = shape.width;
    c.height = shape.height;
    c.frames_per_video = shape.frames_per_video;
    absl::Status status = CallHook(*p.plugin, "shape_job", [&](atelier_error* err) {
      return d.shape_job(p.plugin->state(), p.state, &c, err);
    });
    if (!status.ok()) return status;
    shape.batch_size = c.batch_size;
    shape.n_iter = c.n_iter;
    shape.steps = c.steps;
    shape.frames_per_video = c.frames_per_video;
  }
  return absl::OkStatus();
}

absl::Status JobHooks::OverrideSchedule(at::Tensor& alphas_cumprod) {
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.schedule == nullptr) continue;
    const at::Tensor in = alphas_cumprod.to(at::kCPU, at::kFloat).contiguous();
    sdk::Borrow borrowed(in);
    atelier_schedule_params params{};
    params.struct_size = sizeof(params);
    params.alphas_cumprod = borrowed.get();
    absl::Status status = CallHook(*p.plugin, "schedule", [&](atelier_error* err) {
      return d.schedule(p.plugin->state(), p.state, &params, err);
    });
    auto out = TakeOutput(params.alphas_cumprod_out, *p.plugin, "schedule", "alphas_cumprod", in);
    if (!status.ok()) return status;
    if (!out.ok()) return out.status();
    if (out->defined()) alphas_cumprod = *out;
  }
  return absl::OkStatus();
}

absl::Status JobHooks::PassStarted(const engine::PassInfo& pass) {
  current_pass_ = static_cast<int32_t>(pass.pass);
  const atelier_pass_info info = CPassInfo(pass);
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.pass_started == nullptr) continue;
    absl::Status status = CallHook(*p.plugin, "pass_started", [&](atelier_error* err) {
      return d.pass_started(p.plugin->state(), p.state, &info, err);
    });
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status JobHooks::InitLatent(const engine::PassInfo& pass, at::Tensor& init_latent,
                                  const engine::NoiseDraw& next_noise) {
  ScopedDraw scope(noise_draw_, next_noise);
  const atelier_pass_info info = CPassInfo(pass);
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.init_latent == nullptr) continue;
    sdk::Borrow in(init_latent);
    atelier_init_latent_params params{};
    params.struct_size = sizeof(params);
    params.pass = &info;
    params.init_latent = in.get();
    absl::Status status = CallHook(*p.plugin, "init_latent", [&](atelier_error* err) {
      return d.init_latent(p.plugin->state(), p.state, &params, err);
    });
    auto out = TakeOutput(params.init_latent_out, *p.plugin, "init_latent", "init_latent", init_latent);
    if (!status.ok()) return status;
    if (!out.ok()) return out.status();
    if (out->defined()) init_latent = *out;
  }
  return absl::OkStatus();
}

absl::StatusOr<engine::SampledPass> JobHooks::Sample(const engine::PassInfo& pass, const at::Tensor& noise,
                                                     const at::Tensor& alphas_cumprod, const engine::SampleNext& next,
                                                     const engine::NoiseDraw& next_noise) {
  ScopedDraw scope(noise_draw_, next_noise);
  return SampleFrom(0, CPassInfo(pass), noise, alphas_cumprod.to(at::kCPU, at::kFloat).contiguous(), next);
}

absl::StatusOr<engine::SampledPass> JobHooks::SampleFrom(size_t first, const atelier_pass_info& info,
                                                         const at::Tensor& noise, const at::Tensor& alphas_cumprod,
                                                         const engine::SampleNext& next) {
  size_t i = first;
  while (i < participants_.size() && participants_[i].plugin->descriptor().sample == nullptr) ++i;
  if (i == participants_.size()) return next(noise);
  Participant& p = participants_[i];
  const auto& d = p.plugin->descriptor();
  atelier_sample_call rest;
  rest.next = [this, i, &info, &alphas_cumprod, &next, &noise](const at::Tensor& x) -> absl::StatusOr<engine::SampledPass> {
    if (x.sizes() != noise.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("sample_next: noise of shape ", c10::str(x.sizes()),
                                                     "; the pass's is ", c10::str(noise.sizes())));
    }
    return SampleFrom(i + 1, info, x.to(noise.device(), noise.scalar_type()), alphas_cumprod, next);
  };
  sdk::Borrow in(noise), alphas(alphas_cumprod);
  atelier_sample_params params{};
  params.struct_size = sizeof(params);
  params.pass = &info;
  params.call = &rest;
  params.noise = in.get();
  params.alphas_cumprod = alphas.get();
  absl::Status status = CallHook(*p.plugin, "sample", [&](atelier_error* err) {
    return d.sample(p.plugin->state(), p.state, &params, err);
  });
  auto out = TakeOutput(params.latent_out, *p.plugin, "sample", "latent", noise);
  if (!status.ok()) return status;
  if (!out.ok()) return out.status();
  if (!out->defined()) return SampleFrom(i + 1, info, noise, alphas_cumprod, next);
  return engine::SampledPass{*out, params.interrupted_out != 0};
}

absl::StatusOr<at::Tensor> JobHooks::NextNoise() {
  if (noise_draw_ == nullptr) {
    return absl::FailedPreconditionError("next_noise: only during the init_latent and sample hooks");
  }
  return (*noise_draw_)();
}

absl::StatusOr<std::string> JobHooks::ScriptArgs(const std::string& plugin) {
  const Plugin* target = registry_->Find(plugin);
  if (target == nullptr) {
    return absl::NotFoundError(absl::StrCat("script_args: no plugin '", plugin, "' (loaded: ", registry_->NameList(),
                                            ")"));
  }
  const std::string key = absl::AsciiStrToLower(target->name());
  if (const auto fed = fed_args_.find(key); fed != fed_args_.end()) return fed->second;
  if (const auto given = given_args_.find(key); given != given_args_.end()) return given->second;
  return std::string("null");
}

absl::StatusOr<at::Tensor> JobHooks::CallModel(engine::ModelCall& call, const engine::ModelCallNext& next) {
  return CallModelFrom(0, call, next);
}

absl::StatusOr<at::Tensor> JobHooks::CallModelFrom(size_t first, engine::ModelCall& call,
                                                   const engine::ModelCallNext& next) {
  size_t i = first;
  while (i < participants_.size() && participants_[i].plugin->descriptor().model_call == nullptr) ++i;
  if (i == participants_.size()) return CallInnermost(call, next);
  Participant& p = participants_[i];
  const auto& d = p.plugin->descriptor();
  // The rest of the chain, on whatever rows the plugin passes.
  atelier_model_call rest;
  rest.next = [this, i, &call, &next](const atelier_model_call_args& args) -> absl::StatusOr<at::Tensor> {
    if (args.x == nullptr || args.timesteps == nullptr || args.context == nullptr) {
      return absl::InvalidArgumentError("model_call_next: x, timesteps and context are required");
    }
    if (args.cond_rows < 0 || args.x->ndim < 1 || args.cond_rows > args.x->shape[0]) {
      return absl::InvalidArgumentError(absl::StrCat("model_call_next: cond_rows ", args.cond_rows,
                                                     " is outside [0, rows of x]"));
    }
    engine::ModelCall sub;
    sub.sampling_step = call.sampling_step;
    sub.total_sampling_steps = call.total_sampling_steps;
    sub.x = sdk::View(args.x).to(call.x.device(), call.x.scalar_type());
    sub.timesteps = sdk::View(args.timesteps).to(call.timesteps.device(), call.timesteps.scalar_type());
    sub.context = sdk::View(args.context).to(call.context.device(), call.context.scalar_type());
    sub.cond_rows = args.cond_rows;
    sub.frames_per_video = args.frames_per_video > 0 ? args.frames_per_video : call.frames_per_video;
    if (ATELIER_HAS_FIELD(&args, atelier_model_call_args, batch_rows) && args.batch_rows != nullptr) {
      const at::Tensor map = sdk::View(args.batch_rows).to(at::kCPU, at::kLong);
      if (map.dim() != 1 || map.size(0) != sub.x.size(0)) {
        return absl::InvalidArgumentError("model_call_next: batch_rows must be int64 [rows of x]");
      }
      sub.batch_rows = call.batch_rows.defined() ? call.batch_rows.index_select(0, map) : map.clone();
    } else if (call.batch_rows.defined() && call.batch_rows.size(0) == sub.x.size(0)) {
      sub.batch_rows = call.batch_rows;
    }
    return CallModelFrom(i + 1, sub, next);
  };
  sdk::Borrow x(call.x), t(call.timesteps), ctx(call.context);
  atelier_model_call_args args{};
  args.struct_size = sizeof(args);
  args.x = x.get();
  args.timesteps = t.get();
  args.context = ctx.get();
  args.cond_rows = call.cond_rows;
  args.frames_per_video = call.frames_per_video;
  std::optional<sdk::Borrow> rows;
  if (call.batch_rows.defined()) {
    rows.emplace(call.batch_rows);
    args.batch_rows = rows->get();
  }
  atelier_model_call_params params{};
  params.struct_size = sizeof(params);
  params.sampling_step = call.sampling_step;
  params.total_sampling_steps = call.total_sampling_steps;
  params.call = &rest;
  params.args = &args;
  absl::Status status = CallHook(*p.plugin, "model_call", [&](atelier_error* err) {
    return d.model_call(p.plugin->state(), p.state, &params, err);
  });
  auto adopted = SafeAdopt(params.eps_out, *p.plugin, "model_call");
  if (!status.ok()) return status;
  if (!adopted.ok()) return adopted.status();
  const at::Tensor eps = *adopted;
  if (!eps.defined()) return CallModelFrom(i + 1, call, next);
  if (eps.dim() != 4 || eps.size(0) != call.x.size(0) || eps.size(2) != call.x.size(2) ||
      eps.size(3) != call.x.size(3)) {
    return absl::InvalidArgumentError(absl::StrCat("plugin '", p.plugin->name(), "' returned eps of shape ",
                                                   c10::str(eps.sizes()), " from model_call for x of shape ",
                                                   c10::str(call.x.sizes())));
  }
  return eps.to(call.x.device(), at::kFloat);
}

absl::StatusOr<at::Tensor> JobHooks::CallInnermost(engine::ModelCall& call, const engine::ModelCallNext& next) {
  if (has_residuals_) {
    if (absl::Status st = UnetResiduals(call.sampling_step, call.total_sampling_steps, call.cond_rows, call.x,
                                        call.timesteps, call.context, call.batch_rows, call.residuals);
        !st.ok()) {
      return st;
    }
  }
  if (has_block_) {
    const int cond_rows = call.cond_rows;
    const at::Tensor context = call.context;
    call.block_hook = [this, cond_rows, context](const engine::UNetBlockPoint& where, at::Tensor& hidden) {
      return UnetBlock(where.point, static_cast<int>(where.kind), where.index, cond_rows, hidden, context);
    };
  }
  if (has_attention_) {
    const int cond_rows = call.cond_rows;
    call.attention_hook = [this, cond_rows](int layer, const at::Tensor& hidden) {
      return SelfAttention(layer, cond_rows, hidden);
    };
  }
  if (has_block_end_) {
    const int cond_rows = call.cond_rows;
    call.block_end_hook = [this, cond_rows](engine::UNetBlockKind kind, int index, at::Tensor& hidden) {
      return UnetBlockEnd(static_cast<int>(kind), index, cond_rows, hidden);
    };
  }
  return next(call);
}

absl::StatusOr<engine::SelfAttentionExtra> JobHooks::SelfAttention(int layer, int cond_rows, const at::Tensor& hidden) {
  engine::SelfAttentionExtra extra;
  std::vector<at::Tensor> contexts;
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.self_attention == nullptr) continue;
    sdk::Borrow h_in(hidden);
    atelier_self_attention_params params{};
    params.struct_size = sizeof(params);
    params.layer = layer;
    params.cond_rows = cond_rows;
    params.hidden = h_in.get();
    absl::Status status = CallHook(*p.plugin, "self_attention", [&](atelier_error* err) {
      return d.self_attention(p.plugin->state(), p.state, &params, err);
    });
    at::Tensor context = sdk::Adopt(params.context_out);
    at::Tensor weight = sdk::Adopt(params.plain_weight_out);
    if (!status.ok()) return status;
    if (context.defined()) {
      if (context.dim() != 3 || context.size(0) != hidden.size(0) || context.size(2) != hidden.size(2)) {
        return absl::InvalidArgumentError(absl::StrCat("plugin '", p.plugin->name(),
                                                       "' returned a self-attention context of shape ",
                                                       c10::str(context.sizes()), " for hidden states ",
                                                       c10::str(hidden.sizes())));
      }
      contexts.push_back(context.to(hidden.device(), hidden.scalar_type()));
    }
    if (weight.defined()) {
      if (weight.numel() != hidden.size(0)) {
        return absl::InvalidArgumentError(absl::StrCat("plugin '", p.plugin->name(),
                                                       "' returned plain_weight with ", weight.numel(),
                                                       " values for ", hidden.size(0), " rows"));
      }
      extra.plain_weight = weight.reshape({-1}).to(hidden.device(), at::kFloat);  // the last plugin's wins
    }
  }
  if (!contexts.empty()) extra.context = contexts.size() == 1 ? contexts[0] : at::cat(contexts, 1);
  return extra;
}

absl::Status JobHooks::UnetBlockEnd(int block_kind, int block_index, int cond_rows, at::Tensor& hidden) {
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.unet_block_end == nullptr) continue;
    sdk::Borrow h_in(hidden);
    atelier_unet_block_end_params params{};
    params.struct_size = sizeof(params);
    params.block_kind = block_kind;
    params.block_index = block_index;
    params.cond_rows = cond_rows;
    params.hidden = h_in.get();
    absl::Status status = CallHook(*p.plugin, "unet_block_end", [&](atelier_error* err) {
      return d.unet_block_end(p.plugin->state(), p.state, &params, err);
    });
    auto out = TakeOutput(params.hidden_out, *p.plugin, "unet_block_end", "hidden", hidden);
    if (!status.ok()) return status;
    if (!out.ok()) return out.status();
    if (out->defined()) hidden = *out;
  }
  return absl::OkStatus();
}

void JobHooks::InfotextAdditions(int index, std::vector<std::pair<std::string, std::string>>& extra) const {
  for (const auto& [image, key, value] : infotext_) {
    if (image != -1 && image != index) continue;
    bool replaced = false;  // a key added twice keeps its first place and its last value (a dict, as WebUI's)
    for (auto& kv : extra) {
      if (kv.first == key) {
        kv.second = value;
        replaced = true;
      }
    }
    if (!replaced) extra.emplace_back(key, value);
  }
}

absl::Status JobHooks::AddInfotext(int image_index, const std::string& key, const std::string& value) {
  if (key.empty() || key.find_first_of(":,\n") != std::string::npos || image_index < -1) {
    return absl::InvalidArgumentError(absl::StrCat("add_infotext: the key '", key,
                                                   "' must be non-empty without ':', ',' or a newline, and the "
                                                   "image index -1 (every image) or >= 0"));
  }
  infotext_.emplace_back(image_index, key, value);
  return absl::OkStatus();
}

absl::Status JobHooks::FeedPlugin(const std::string& from, const std::string& plugin, const std::string& args_json) {
  if (!in_process_) {
    return absl::FailedPreconditionError("feed_plugin: only during process (the job's plugins are chosen there)");
  }
  const Plugin* target = registry_->Find(plugin);
  if (target == nullptr) {
    return absl::NotFoundError(absl::StrCat("feed_plugin: no plugin '", plugin, "' (loaded: ",
                                            registry_->NameList(), ")"));
  }
  const std::string key = absl::AsciiStrToLower(target->name());
  if (std::find(processed_.begin(), processed_.end(), key) != processed_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "feed_plugin: '", target->name(), "' already ran its process (hook order is priority, then name: give it "
        "a larger priority than '", from, "')"));
  }
  fed_args_[key] = args_json.empty() ? std::string("null") : args_json;
  return absl::OkStatus();
}

absl::Status JobHooks::CfgDenoiser(CfgDenoiserTensors& t) {
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.cfg_denoiser == nullptr) continue;
    sdk::Borrow x(t.x), sigma(t.sigma), cond(t.text_cond), uncond(t.text_uncond), image_cond(t.image_cond);
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
    sdk::Borrow x_in(x);
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
    sdk::Borrow x_in(x);
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
                                     const at::Tensor& batch_rows,
                                     std::array<at::Tensor, ATELIER_UNET_RESIDUALS>& residuals) {
  for (auto& p : participants_) {
    const auto& d = p.plugin->descriptor();
    if (d.unet_residuals == nullptr) continue;
    sdk::Borrow x_in(x), t_in(timesteps), c_in(context);
    atelier_unet_residuals_params params{};
    params.struct_size = sizeof(params);
    params.sampling_step = sampling_step;
    params.total_sampling_steps = total_sampling_steps;
    params.cond_rows = cond_rows;
    params.x = x_in.get();
    params.timesteps = t_in.get();
    params.context = c_in.get();
    params.pass = current_pass_;
    std::optional<sdk::Borrow> rows;
    if (batch_rows.defined()) {
      rows.emplace(batch_rows);
      params.batch_rows = rows->get();
    }
    absl::Status status = CallHook(*p.plugin, "unet_residuals", [&](atelier_error* err) {
      return d.unet_residuals(p.plugin->state(), p.state, &params, err);
    });
    std::array<at::Tensor, ATELIER_UNET_RESIDUALS> taken;
    absl::Status adopt_status;
    for (int i = 0; i < ATELIER_UNET_RESIDUALS; ++i) {  // every one, so none leaks
      auto adopted = SafeAdopt(params.residual_out[i], *p.plugin, "unet_residuals");
      if (adopted.ok()) taken[i] = *adopted;
      else if (adopt_status.ok()) adopt_status = adopted.status();
    }
    if (!status.ok()) return status;
    if (!adopt_status.ok()) return adopt_status;
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
    sdk::Borrow h_in(hidden), c_in(context);
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
    sdk::Borrow f_in(frames);
    atelier_frames_params params{};
    params.struct_size = sizeof(params);
    params.frames = f_in.get();
    absl::Status status = CallHook(*p.plugin, "postprocess_frames", [&](atelier_error* err) {
      return d.postprocess_frames(p.plugin->state(), p.state, &params, err);
    });
    auto adopted = SafeAdopt(params.frames_out, *p.plugin, "postprocess_frames");
    if (!status.ok()) return status;
    if (!adopted.ok()) return adopted.status();
    const at::Tensor out = *adopted;
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
    sdk::Borrow f_in(frames);
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


absl::Status JobHooks::SendFrame(const JobFrame& frame, const FrameSink& sink) {
  const FrameSink* previous = frame_sink_;
  frame_sink_ = &sink;
  absl::Status status = Deliver(0, frame);
  frame_sink_ = previous;
  return status;
}

absl::Status JobHooks::Deliver(size_t first, const JobFrame& frame_in) {
  JobFrame frame = frame_in;
  for (size_t i = first; i < participants_.size(); ++i) {
    Participant& p = participants_[i];
    const auto& d = p.plugin->descriptor();
    if (d.frame == nullptr) continue;
    const at::Tensor image = frame.image.to(at::kCPU, at::kFloat);  // strided views pass as they are
    sdk::Borrow borrowed(image);
    atelier_frame c_frame{};
    c_frame.struct_size = sizeof(c_frame);
    c_frame.index = frame.index;
    c_frame.seed = frame.seed;
    c_frame.subseed = frame.subseed;
    c_frame.infotext = frame.infotext.c_str();
    c_frame.image = borrowed.get();
    c_frame.interrupted = frame.interrupted ? 1 : 0;
    atelier_frame_params params{};
    params.struct_size = sizeof(params);
    params.frame = &c_frame;
    ++frames_seen_[i];
    push_from_[p.job.get()] = i + 1;  // frames it pushes continue after it
    absl::Status status = CallHook(*p.plugin, "frame", [&](atelier_error* err) {
      return d.frame(p.plugin->state(), p.state, &params, err);
    });
    push_from_.erase(p.job.get());
    auto adopted = SafeAdopt(params.image_out, *p.plugin, "frame");
    // A plugin that stops for a cancelled job passes the frame on: the interrupted image is still delivered.
    if (absl::IsCancelled(status)) continue;
    if (!status.ok()) return status;
    if (!adopted.ok()) return adopted.status();
    const at::Tensor out = *adopted;
    if (params.drop != 0) return absl::OkStatus();
    if (out.defined()) {
      if (out.dim() != 3 || out.size(0) != 3 || !out.is_floating_point()) {
        return absl::InvalidArgumentError(absl::StrCat("plugin '", p.plugin->name(), "' returned a frame of shape ",
                                                       c10::str(out.sizes()),
                                                       " from frame; expected float [3, H, W] in [0, 1]"));
      }
      frame.image = out.to(at::kCPU, at::kFloat);
    }
  }
  return (*frame_sink_)(frame);
}

absl::Status JobHooks::PushFrame(const atelier_job* from, const JobFrame& frame) {
  const auto it = push_from_.find(from);
  if (it == push_from_.end() || frame_sink_ == nullptr) {
    return absl::FailedPreconditionError("push_frame: only during the plugin's frame or frames_finish hook");
  }
  if (!frame.image.defined() || frame.image.dim() != 3 || frame.image.size(0) != 3) {
    return absl::InvalidArgumentError("push_frame: the image must be float32 [3, H, W] in [0, 1] on the CPU");
  }
  return Deliver(it->second, frame);
}

void JobHooks::FinishFrames(bool interrupted, const FrameSink& sink, std::vector<absl::Status>& errors) {
  const FrameSink* previous = frame_sink_;
  frame_sink_ = &sink;
  for (size_t i = 0; i < participants_.size(); ++i) {
    Participant& p = participants_[i];
    const auto& d = p.plugin->descriptor();
    if (d.frames_finish == nullptr) continue;
    atelier_frames_finish_params params{};
    params.struct_size = sizeof(params);
    params.interrupted = interrupted ? 1 : 0;
    params.frames_seen = frames_seen_[i];
    push_from_[p.job.get()] = i + 1;
    absl::Status status = CallHook(*p.plugin, "frames_finish", [&](atelier_error* err) {
      return d.frames_finish(p.plugin->state(), p.state, &params, err);
    });
    push_from_.erase(p.job.get());
    if (!status.ok()) errors.push_back(status);
  }
  frame_sink_ = previous;
}

absl::StatusOr<std::string> InvokePlugin(const PluginRegistry& registry, const std::string& name,
                                         const std::string& method, const std::string& args_json, JobSink* sink,
                                         JobHooks* hooks) {
  const Plugin* plugin = registry.Find(name);
  if (plugin == nullptr) {
    return absl::NotFoundError(absl::StrCat("no plugin '", name, "' (loaded: ", registry.NameList(), ")"));
  }
  // call_plugin may nest (A calls B calls C); a cycle must end in an error, not a stack overflow.
  thread_local int depth = 0;
  if (depth >= 8) {
    return absl::FailedPreconditionError(
        absl::StrCat("call_plugin nests deeper than 8 calls (calling '", plugin->name(), "'): a cycle between plugins?"));
  }
  struct Depth {
    Depth() { ++depth; }
    ~Depth() { --depth; }
  } nested;
  const atelier_plugin_descriptor& d = plugin->descriptor();
  if (d.invoke == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("plugin '", plugin->name(), "' has no invoke entry (it works only inside a generation)"));
  }
  atelier_job job;
  job.sink = sink;
  job.plugin_name = plugin->name();
  job.hooks = hooks;
  job.call_plugin = [&registry, sink, hooks](const std::string& plugin_name, const std::string& m,
                                             const std::string& args) {
    return InvokePlugin(registry, plugin_name, m, args, sink, hooks);
  };
  job.invoke_result = "null";
  absl::Status status = CallHook(*plugin, "invoke", [&](atelier_error* err) {
    return d.invoke(plugin->state(), &job, method.c_str(), args_json.empty() ? "null" : args_json.c_str(), err);
  });
  if (!status.ok()) return status;
  return job.invoke_result;
}

}  // namespace atelier::host
