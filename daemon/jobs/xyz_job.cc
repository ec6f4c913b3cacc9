#include "jobs/xyz_job.h"

#include <ATen/ATen.h>

#include <chrono>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/pipeline/infotext.h"
#include "image/image_formats.h"
#include "jobs/live_preview.h"
#include "jobs/xyz_grid.h"

namespace atelier::jobs {
namespace {

// One cell's events: progress re-counted over the whole plot, results passed on (renumbered) and the first kept.
class CellEvents final : public JobEvents {
 public:
  CellEvents(JobEvents& outer, int cell, int cells, int* next_index)
      : outer_(outer), cell_(cell), cells_(cells), next_index_(next_index) {}
  const std::string& job_id() const override { return outer_.job_id(); }
  bool ShouldStop() const override { return outer_.ShouldStop(); }
  bool TakeSkip() override { return outer_.TakeSkip(); }
  bool Abandoned() const override { return outer_.Abandoned(); }
  void Started(std::vector<std::int64_t>, std::vector<std::int64_t>, int) override {}
  void Progress(ProgressEvent p) override {
    p.progress = (cell_ + p.progress) / cells_;
    p.job_no = cell_;
    p.job_count = cells_;
    outer_.Progress(std::move(p));
  }
  absl::Status Result(ResultEvent r) override {
    if (!first_) first_ = r;
    r.index = (*next_index_)++;
    return outer_.Result(std::move(r));
  }
  void AddTiming(const std::string& stage, double seconds) override { outer_.AddTiming(stage, seconds); }
  void Warn(const std::string& message) override { outer_.Warn(message); }
  bool IsCancelled() const override { return outer_.IsCancelled(); }
  absl::Status ReportPluginProgress(const std::string& plugin, const std::string& stage, int done, int total,
                                    const std::string& text) override {
    return outer_.ReportPluginProgress(plugin, stage, done, total, text);
  }
  absl::Status EmitFrame(const std::string& plugin, int index, std::string png, int width, int height) override {
    return outer_.EmitFrame(plugin, index, std::move(png), width, height);
  }
  absl::Status EmitArtifact(const std::string& plugin, std::string name, std::string mime_type,
                            std::string data) override {
    return outer_.EmitArtifact(plugin, std::move(name), std::move(mime_type), std::move(data));
  }
  const std::optional<ResultEvent>& first() const { return first_; }

 private:
  JobEvents& outer_;
  int cell_, cells_;
  int* next_index_;
  std::optional<ResultEvent> first_;
};

at::Tensor Pixels(const EncodedImage& image, int width, int height) {
  auto decoded = engine::DecodeImageRgb(image.data);
  if (!decoded.ok()) return at::zeros({height, width, 3}, at::kByte);
  return at::from_blob(decoded->pixels.data(), {decoded->height, decoded->width, 3}, at::kByte).clone();
}

}  // namespace

std::string AddInfotextKeys(const std::string& infotext, const std::vector<std::pair<std::string, std::string>>& keys) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : keys) parts.push_back(absl::StrCat(k, ": ", engine::QuoteInfotextValue(v)));
  if (parts.empty()) return infotext;
  const std::string added = absl::StrJoin(parts, ", ");
  const size_t line = infotext.rfind('\n');
  const size_t version = infotext.find(", Version: ", line == std::string::npos ? 0 : line);
  if (version != std::string::npos) return absl::StrCat(infotext.substr(0, version), ", ", added, infotext.substr(version));
  if (infotext.empty()) return added;
  return absl::StrCat(infotext, ", ", added);
}

absl::Status RunXyzJob(const XyzLayout& layout, const std::vector<XyzCell>& cells, JobEvents& events) {
  const int nx = static_cast<int>(layout.x_labels.size()), ny = static_cast<int>(layout.y_labels.size()),
            nz = static_cast<int>(layout.z_labels.size());
  const int count = static_cast<int>(cells.size());
  events.Started({}, {}, count + (layout.include_sub_grids && nz > 1 ? nz : 0) + 1);
  std::vector<at::Tensor> images(static_cast<size_t>(count));
  std::vector<std::string> infotexts(static_cast<size_t>(count));
  int next_index = 0;
  for (int i = 0; i < count; ++i) {
    const XyzCell& cell = cells[static_cast<size_t>(i)];
    if (events.ShouldStop()) return absl::CancelledError("the X/Y/Z plot was cancelled");
    CellEvents cell_events(events, i, count, &next_index);
    const absl::Status status = cell.run(cell_events);
    const size_t slot = static_cast<size_t>(cell.ix + cell.iy * nx + cell.iz * nx * ny);
    if (absl::IsCancelled(status) || events.ShouldStop()) return status.ok() ? absl::CancelledError("cancelled") : status;
    if (!status.ok() || !cell_events.first()) {
      events.Warn(absl::StrCat("X/Y/Z plot cell ", cell.ix, ",", cell.iy, ",", cell.iz, " failed: ",
                               status.ok() ? "no image" : status.message()));
      images[slot] = at::zeros({cell.height, cell.width, 3}, at::kByte);
      continue;
    }
    images[slot] = Pixels(cell_events.first()->image, cell.width, cell.height);
    infotexts[slot] = cell_events.first()->infotext;
  }

  const auto start = std::chrono::steady_clock::now();
  std::vector<at::Tensor> sub_grids;
  for (int z = 0; z < nz; ++z) {
    const std::vector<at::Tensor> slice(images.begin() + static_cast<std::ptrdiff_t>(z) * nx * ny,
                                        images.begin() + static_cast<std::ptrdiff_t>(z + 1) * nx * ny);
    int64_t w = 0, h = 0;
    for (const auto& img : slice) {
      w = std::max(w, img.size(1));
      h = std::max(h, img.size(0));
    }
    at::Tensor grid = ImageGrid(slice, ny);
    if (layout.draw_legend) {
      auto drawn = DrawGridAnnotations(grid, static_cast<int>(w), static_cast<int>(h), layout.x_labels, layout.y_labels,
                                       layout.margin);
      if (!drawn.ok()) return drawn.status();
      grid = *std::move(drawn);
    }
    sub_grids.push_back(grid);
  }
  at::Tensor main = ImageGrid(sub_grids, 1);
  if (layout.draw_legend) {
    int64_t w = 0, h = 0;
    for (const auto& g : sub_grids) {
      w = std::max(w, g.size(1));
      h = std::max(h, g.size(0));
    }
    auto drawn = DrawGridAnnotations(main, static_cast<int>(w), static_cast<int>(h), layout.z_labels, {""}, 0);
    if (!drawn.ok()) return drawn.status();
    main = *std::move(drawn);
  }
  events.AddTiming("grid", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());

  engine::ImageEncodeOptions encoding;
  encoding.format = layout.output.format;
  encoding.quality = layout.output.quality;
  const auto send = [&](const at::Tensor& image, const std::string& infotext) -> absl::Status {
    encoding.infotext = layout.output.omit_infotext ? std::string() : infotext;
    auto encoded = EncodeRgb(image.contiguous(), encoding);
    if (!encoded.ok()) return encoded.status();
    ResultEvent result;
    result.index = next_index++;
    result.image = *std::move(encoded);
    result.infotext = infotext;
    result.seed = -1;
    result.subseed = -1;
    return events.Result(std::move(result));
  };
  // Sub-grid z takes the infotext of its first cell with the X / Y keys; the main grid adds the Z keys.
  if (layout.include_sub_grids && nz > 1) {
    for (int z = 0; z < nz; ++z) {
      if (absl::Status s = send(sub_grids[static_cast<size_t>(z)],
                                AddInfotextKeys(infotexts[static_cast<size_t>(z) * nx * ny], layout.xy_keys));
          !s.ok()) {
        return s;
      }
    }
  }
  std::vector<std::pair<std::string, std::string>> all = layout.xy_keys;
  all.insert(all.end(), layout.z_keys.begin(), layout.z_keys.end());
  return send(main, AddInfotextKeys(infotexts[0], all));
}

}  // namespace atelier::jobs
