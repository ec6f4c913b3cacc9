// WebUI's X/Y/Z plot script (scripts/xyz_grid.py) as one job: its cells run one after another as ordinary
// generations (each result streamed as it finishes, with its own infotext), then the labelled grid(s) are drawn
// from each cell's first image (draw_xyz_grid: a sub-grid per Z value, x along the columns, y down the rows, then
// the sub-grids side by side) and sent as the job's last result(s), with the grid infotext (the first cell's plus
// "Script: X/Y/Z plot", "X Type", "X Values", ...). A cell that fails becomes a black cell and a warning, as in
// WebUI; a cancelled job stops.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "jobs/job_events.h"
#include "jobs/job_settings.h"

namespace atelier::jobs {

struct XyzCell {
  int ix = 0, iy = 0, iz = 0;
  int width = 0, height = 0;  // its image size (for the black cell of a failure)
  // Runs the cell's generation, its events going to `events`.
  std::function<absl::Status(JobEvents& events)> run;
};

struct XyzLayout {
  std::vector<std::string> x_labels, y_labels, z_labels;  // one per value ("" for an axis of Nothing)
  bool draw_legend = true;
  bool include_sub_grids = false;
  int margin = 0;
  // Infotext keys added to the first cell's for the grids: the X and Y keys (sub-grids), then the Z keys (main).
  std::vector<std::pair<std::string, std::string>> xy_keys, z_keys;
  OutputSettings output;
};

// `cells` in execution order (WebUI's cost-based loop order); every (ix, iy, iz) exactly once.
absl::Status RunXyzJob(const XyzLayout& layout, const std::vector<XyzCell>& cells, JobEvents& events);

// Adds infotext keys to a generation infotext where WebUI's extra_generation_params end: before "Version: ..." (or
// at the end of the parameters line).
std::string AddInfotextKeys(const std::string& infotext, const std::vector<std::pair<std::string, std::string>>& keys);

}  // namespace atelier::jobs
