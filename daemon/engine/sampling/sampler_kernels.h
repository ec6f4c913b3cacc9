// The sampling loops, one function per WebUI sampler, written after k-diffusion's sample_* functions, WebUI's
// restart/LCM samplers and its timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC). Internal to the engine:
// samplers.h is the entry point (samplers.cc dispatches to these). Implemented in three files by family:
// kdiffusion_samplers.cc (Euler, Heun, DPM2, LMS, the DPM++ family, Restart, LCM), dpm_solver_samplers.cc (DPM fast
// and DPM adaptive, k-diffusion's DPM-Solver) and timestep_samplers.cc (DDIM, DDIM CFG++, PLMS, UniPC). The loops throw SamplingStopped (from the denoiser) to stop.
//
// Scalars (sigmas, step sizes) are doubles computed from the float32 schedule values; tensors stay on the
// latent's device. The only reads back to the host: DPM adaptive's error estimate (its step-size control) and the
// denoiser's NaN check (one scalar per evaluation).
#pragma once

#include <functional>
#include <limits>
#include <vector>

#include <ATen/core/Tensor.h>

#include "engine/sampling/cfg_denoiser.h"

namespace atelier::engine {

// Noise for one step, shaped like the latent: WebUI's randn_like (per-image generators) or a Brownian tree.
using NoiseSampler = std::function<at::Tensor(double sigma, double sigma_next)>;

struct SamplerParams {
  double eta = 1.0;  // ancestral/SDE eta (WebUI eta_ancestral); DDIM's eta for the timestep samplers
  double s_churn = 0, s_tmin = 0, s_tmax = std::numeric_limits<double>::infinity(), s_noise = 1.0;
};

struct KernelContext {
  CfgDenoiser& model;
  NoiseSampler noise;
  SamplerParams params;
};

using Sigmas = std::vector<double>;

at::Tensor SampleEuler(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
at::Tensor SampleEulerAncestral(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
at::Tensor SampleHeun(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
at::Tensor SampleDpm2(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
at::Tensor SampleDpm2Ancestral(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
at::Tensor SampleLms(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
at::Tensor SampleDpmpp2sAncestral(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
at::Tensor SampleDpmpp2m(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
at::Tensor SampleDpmppSde(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
at::Tensor SampleDpmpp2mSde(KernelContext& c, at::Tensor x, const Sigmas& sigmas, bool heun);
at::Tensor SampleDpmpp3mSde(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
at::Tensor SampleLcm(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
at::Tensor SampleRestart(KernelContext& c, at::Tensor x, const Sigmas& sigmas);
// DPM-Solver fast / adaptive integrate between the model's sigma_min and sigma_max (they ignore the schedule).
at::Tensor SampleDpmFast(KernelContext& c, at::Tensor x, double sigma_min, double sigma_max, int steps);
at::Tensor SampleDpmAdaptive(KernelContext& c, at::Tensor x, double sigma_min, double sigma_max);

// Timestep samplers: `timesteps` ascending (WebUI's get_timesteps), x starts as the noise itself;
// `alphas_cumprod` is the model's float32 [1000] schedule.
at::Tensor SampleDdim(KernelContext& c, at::Tensor x, const std::vector<int>& timesteps,
                      const at::Tensor& alphas_cumprod, bool cfgpp);
at::Tensor SamplePlms(KernelContext& c, at::Tensor x, const std::vector<int>& timesteps,
                      const at::Tensor& alphas_cumprod);
struct UniPcOptions {
  bool bh2 = false;  // variant bh1 (WebUI default) or bh2
  int order = 3;
  bool lower_order_final = true;
  enum class SkipType { kTimeUniform, kTimeQuadratic, kLogSnr } skip_type = SkipType::kTimeUniform;
};
at::Tensor SampleUniPc(KernelContext& c, at::Tensor x, const std::vector<int>& timesteps,
                       const at::Tensor& alphas_cumprod, const UniPcOptions& options, bool img2img);

}  // namespace atelier::engine
