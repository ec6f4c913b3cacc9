#include "server/upscale_request.h"

#include "server/generation_settings.h"

namespace atelier::server {

absl::StatusOr<std::shared_ptr<const PreparedUpscale>> PrepareUpscale(const v1::UpscaleRequest& r,
                                                                      const engine::ModelFolders* folders) {
  auto prepared = std::make_shared<PreparedUpscale>();
  jobs::UpscaleSettings& s = prepared->settings;
  s.images.assign(r.images().begin(), r.images().end());
  s.resize_mode = r.resize_mode();
  s.upscale_by_given = r.has_upscaling_resize();
  s.upscale_by = r.has_upscaling_resize() ? r.upscaling_resize() : 2.0;
  s.to_width = r.has_upscaling_resize_w() ? r.upscaling_resize_w() : 512;
  s.to_height = r.has_upscaling_resize_h() ? r.upscaling_resize_h() : 512;
  s.crop = r.has_upscaling_crop() ? r.upscaling_crop() : true;
  s.upscaler_1 = r.upscaler_1().empty() ? "None" : r.upscaler_1();
  s.upscaler_2 = r.upscaler_2().empty() ? "None" : r.upscaler_2();
  s.upscaler_2_visibility = r.extras_upscaler_2_visibility();
  if (r.has_tile()) s.tiles.tile = r.tile();
  if (r.has_tile_overlap()) s.tiles.overlap = r.tile_overlap();
  if (s.tiles.tile < 0 || s.tiles.tile > 2048 || s.tiles.overlap < 0 || (s.tiles.tile > 0 && s.tiles.overlap >= s.tiles.tile)) {
    return absl::InvalidArgumentError(absl::StrCat("tile ", s.tiles.tile, " / tile_overlap ", s.tiles.overlap,
                                                   ": the tile must be 0 (untiled) to 2048 and the overlap smaller"));
  }
  s.output.format = FileFormatOf(r.output().format(), engine::ImageFileFormat::kPng);
  s.output.quality = r.output().quality() > 0 ? std::min(100, r.output().quality()) : 95;
  s.output.omit_infotext = r.output().omit_infotext();
  if (absl::Status st = jobs::CheckUpscale(s, folders); !st.ok()) return st;
  return std::shared_ptr<const PreparedUpscale>(std::move(prepared));
}

bool RunIfUpscale(JobContext& context, jobs::PipelineCache& pipelines, absl::Status& status) {
  const auto* upscale = dynamic_cast<const PreparedUpscale*>(context.prepared());
  if (upscale == nullptr) return false;
  status = jobs::RunUpscaleJob(pipelines, upscale->settings, context);
  return true;
}

}  // namespace atelier::server
