// How sd-webui-controlnet weights and schedules a unit's residuals (scripts/hook.py, scripts/controlnet.py):
// control modes, soft scales, advanced weighting, cond-only injection and the guidance window.
#pragma once

#include <array>
#include <vector>

#include <ATen/core/Tensor.h>

#include "control_model.h"

namespace atelier::controlnet {

enum class ControlMode { kBalanced = 0, kPromptMoreImportant = 1, kControlMoreImportant = 2 };

// The 13 scales of a unit's residuals: `weight` on each (Balanced), or weight * 0.825^(12 - i) ("soft": either
// other mode, and canny/mlsd units in the hires pass); `advanced` (13 values), when given, replaces them.
std::array<double, kResiduals> ControlScales(double weight, bool soft, const std::vector<double>& advanced);

// WebUI's guidance window: the unit runs while start <= sampling_step / total_sampling_steps <= end, where
// sampling_step is the value on_cfg_denoiser sees (the previous step's index; max(k - 1, 0) at step k).
bool GuidanceActive(int sampling_step, int total_sampling_steps, double start, double end);

// Adds scale_i * raw_i to sum_i for every residual (sum entries start undefined). With `cond_rows_only` ("ControlNet
// is more important") rows at or after `cond_rows` get nothing; `raw` may then hold the conditional rows only.
void AccumulateResiduals(Residuals& sum, const Residuals& raw, const std::array<double, kResiduals>& scales,
                         bool cond_rows_only, int64_t cond_rows, int64_t rows);

}  // namespace atelier::controlnet
