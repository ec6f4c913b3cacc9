// WebUI's "X/Y/Z plot" selectable script (scripts/xyz_grid.py) read from a GenerateRequest's script_name /
// script_args as WebUI's API takes them: 18 positional values (x_type, x_values, x_values_dropdown, y_type, ...,
// draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x/y/z, margin_size, csv_mode),
// the axis types as indices into the txt2img or img2img axis list of WebUI 1.10. Each cell becomes its own
// GenerateRequest (the axis values applied as WebUI's AxisOption.apply sets them); the job layer runs them
// (jobs/xyz_job.h). Value syntax: CSV (quotes protect commas), int ranges "1-5", "1-5 (+2)", "1-10 [4]", float
// ranges "0.5-1.5 (+0.25)", "1-2 [5]"; Prompt S/R replaces its first value; Prompt order permutes.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "atelier/v1/generation.pb.h"
#include "jobs/xyz_job.h"

namespace atelier::server {

// The selectable scripts this daemon has (script_name, compared case-insensitively as WebUI does).
inline constexpr const char* kXyzScriptName = "x/y/z plot";

struct XyzCellRequest {
  int ix = 0, iy = 0, iz = 0;
  v1::GenerateRequest request;  // script_name / script_args cleared
};

struct XyzPlan {
  jobs::XyzLayout layout;              // labels, legend, grid infotext keys (output settings are the caller's)
  std::vector<XyzCellRequest> cells;   // in execution order
};

// INVALID_ARGUMENT naming the argument and what it takes: a bad axis type or value, an axis this daemon does not
// apply, a Prompt S/R search text found in neither prompt, more cells than `max_cells`, or a grid of 200 megapixels
// or more (WebUI's img_max_size_mp).
absl::StatusOr<XyzPlan> PlanXyz(const v1::GenerateRequest& request, int max_cells);

// The labels of the axis types for a mode (for messages and clients): index i is script_args' type value i.
std::vector<std::string> XyzAxisLabels(bool img2img);

}  // namespace atelier::server
