#include "jobs/upscale_job.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/models/nn_util.h"
#include "engine/pipeline/infotext.h"
#include "engine/upscale/upscaler_catalog.h"
#include "image/image_formats.h"
#include "jobs/live_preview.h"
#include "util/limits.h"

namespace atelier::jobs {
namespace {

void Put(std::vector<std::pair<std::string, std::string>>& info, const std::string& key, const std::string& value) {
  for (auto& kv : info) {
    if (kv.first == key) {
      kv.second = value;
      return;
    }
  }
  info.emplace_back(key, value);
}

// One upscaler's result as ScriptPostprocessingUpscale.upscale makes it, with its infotext keys.
absl::StatusOr<at::Tensor> UpscaleOne(const engine::ImageUpscaler& upscaler, const at::Tensor& rgb,
                                      const UpscaleSettings& s, std::vector<std::pair<std::string, std::string>>& info,
                                      const engine::UpscaleStop& stop) {
  double by = s.upscale_by;
  if (s.resize_mode == 1) {
    by = std::max(static_cast<double>(s.to_width) / static_cast<double>(rgb.size(1)),
                  static_cast<double>(s.to_height) / static_cast<double>(rgb.size(0)));
    Put(info, "Postprocess upscale to", absl::StrCat(s.to_width, "x", s.to_height));
  } else {
    Put(info, "Postprocess upscale by", s.upscale_by_given ? engine::PythonFloat(by) : "2");
  }
  auto up = engine::UpscaleBy(upscaler, rgb, by, kMaxUpscaleSide, stop);
  if (!up.ok()) return up.status();
  if (s.resize_mode == 1 && s.crop) {
    // Pasted centred on a black canvas of the size asked (cropping what is larger).
    at::Tensor canvas = at::zeros({s.to_height, s.to_width, 3}, at::kByte);
    const int64_t x = s.to_width / 2 - up->size(1) / 2, y = s.to_height / 2 - up->size(0) / 2;
    const int64_t x0 = std::max<int64_t>(0, x), y0 = std::max<int64_t>(0, y);
    const int64_t x1 = std::min<int64_t>(s.to_width, x + up->size(1)), y1 = std::min<int64_t>(s.to_height, y + up->size(0));
    if (x1 > x0 && y1 > y0) canvas.slice(0, y0, y1).slice(1, x0, x1).copy_(up->slice(0, y0 - y, y1 - y).slice(1, x0 - x, x1 - x));
    Put(info, "Postprocess crop to", absl::StrCat(s.to_width, "x", s.to_height));
    return canvas;
  }
  return up;
}

}  // namespace

absl::Status CheckUpscale(const UpscaleSettings& s, const engine::ModelFolders* folders) {
  if (s.images.empty()) return absl::InvalidArgumentError("images: at least one image to upscale");
  if (s.images.size() > static_cast<size_t>(kMaxImagesPerJob)) {
    return absl::InvalidArgumentError(absl::StrCat("images: ", s.images.size(), " images; at most ", kMaxImagesPerJob));
  }
  if (s.resize_mode != 0 && s.resize_mode != 1) {
    return absl::InvalidArgumentError(absl::StrCat("resize_mode ", s.resize_mode, " is not 0 (scale by) or 1 (scale to)"));
  }
  if (s.resize_mode == 0 && (!std::isfinite(s.upscale_by) || s.upscale_by < 1 || s.upscale_by > 8)) {
    return absl::InvalidArgumentError(absl::StrCat("upscaling_resize ", s.upscale_by, " is outside [1, 8]"));
  }
  if (s.resize_mode == 1 && (s.to_width < 1 || s.to_height < 1 || s.to_width > kMaxUpscaleSide || s.to_height > kMaxUpscaleSide)) {
    return absl::InvalidArgumentError(absl::StrCat("upscaling_resize_w/h ", s.to_width, "x", s.to_height,
                                                   " must be 1 to ", kMaxUpscaleSide));
  }
  if (!std::isfinite(s.upscaler_2_visibility) || s.upscaler_2_visibility < 0 || s.upscaler_2_visibility > 1) {
    return absl::InvalidArgumentError(absl::StrCat("extras_upscaler_2_visibility ", s.upscaler_2_visibility, " is outside [0, 1]"));
  }
  const engine::UpscalerCatalog catalog(folders);
  if (auto u = catalog.Find(s.upscaler_1, "upscaler_1"); !u.ok()) return u.status();
  if (auto u = catalog.Find(s.upscaler_2, "upscaler_2"); !u.ok()) return u.status();
  return absl::OkStatus();
}

absl::Status RunUpscaleJob(PipelineCache& pipelines, const UpscaleSettings& s, JobEvents& events) {
  const engine::UpscalerCatalog catalog(pipelines.models().folders());
  at::Device device(at::kCPU);
  try {
    device = at::Device(pipelines.models().options().device);
  } catch (const std::exception& e) {
    return engine::StatusFromException(e, "the daemon's device");
  }
  const auto load = [&](const std::string& name, const char* field) -> absl::StatusOr<std::shared_ptr<const engine::ImageUpscaler>> {
    auto entry = catalog.Find(name, field);
    if (!entry.ok()) return entry.status();
    const auto start = std::chrono::steady_clock::now();
    auto model = pipelines.upscaler_models().Get(*entry, s.tiles, device);
    events.AddTiming("load upscaler", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return model;
  };
  auto first = load(s.upscaler_1, "upscaler_1");
  if (!first.ok()) return first.status();
  const bool second_used = s.upscaler_2 != "None" && s.upscaler_2_visibility > 0;
  std::shared_ptr<const engine::ImageUpscaler> second;
  if (second_used) {
    auto loaded = load(s.upscaler_2, "upscaler_2");
    if (!loaded.ok()) return loaded.status();
    second = *std::move(loaded);
  }
  const int count = static_cast<int>(s.images.size());
  events.Started(std::vector<std::int64_t>(static_cast<size_t>(count), -1), std::vector<std::int64_t>(static_cast<size_t>(count), -1), count);
  const engine::UpscaleStop stop = [&events] { return events.ShouldStop(); };
  engine::ImageEncodeOptions encoding;
  encoding.format = s.output.format;
  encoding.quality = s.output.quality;
  for (int i = 0; i < count; ++i) {
    if (events.ShouldStop()) return absl::CancelledError("upscale cancelled");
    ProgressEvent progress;
    progress.job_no = i;
    progress.job_count = count;
    progress.progress = static_cast<double>(i) / count;
    progress.pass = "upscale";
    progress.text = absl::StrCat("upscaling image ", i + 1, " of ", count, " with ", s.upscaler_1);
    events.Progress(std::move(progress));
    auto decoded = engine::DecodeImageRgb(s.images[static_cast<size_t>(i)]);
    if (!decoded.ok()) return absl::InvalidArgumentError(absl::StrCat("images[", i, "]: ", decoded.status().message()));
    const at::Tensor rgb = at::from_blob(decoded->pixels.data(), {decoded->height, decoded->width, 3}, at::kByte).clone();
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::pair<std::string, std::string>> info;
    at::Tensor out = rgb;
    if (s.upscaler_1 != "None") {  // WebUI skips the step (and its infotext) for "None"
      auto up = UpscaleOne(**first, rgb, s, info, stop);
      if (!up.ok()) return up.status();
      out = *std::move(up);
      info.emplace_back("Postprocess upscaler", s.upscaler_1);
      if (second_used) {
        auto up2 = UpscaleOne(*second, rgb, s, info, stop);
        if (!up2.ok()) return up2.status();
        if (up2->sizes() != out.sizes()) {
          return absl::InternalError("the two upscalers made images of different sizes");
        }
        // Image.blend: (uint8)(in1 + alpha · (in2 − in1)) with a float alpha.
        const float alpha = static_cast<float>(s.upscaler_2_visibility);
        const at::Tensor a = out.to(at::kFloat), b = up2->to(at::kFloat);
        out = (a + (b - a) * alpha).to(at::kInt).to(at::kByte);
        Put(info, "Postprocess upscaler 2", s.upscaler_2);
      }
    }
    events.AddTiming("upscale", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    std::vector<std::string> parts;
    for (const auto& [k, v] : info) parts.push_back(absl::StrCat(k, ": ", engine::QuoteInfotextValue(v)));
    const std::string infotext = absl::StrJoin(parts, ", ");
    encoding.infotext = s.output.omit_infotext ? std::string() : infotext;
    auto encoded = EncodeRgb(out, encoding);
    if (!encoded.ok()) return encoded.status();
    ResultEvent result;
    result.index = i;
    result.image = *std::move(encoded);
    result.infotext = infotext;
    result.seed = -1;
    result.subseed = -1;
    if (absl::Status st = events.Result(std::move(result)); !st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace atelier::jobs
