// Export speed (issue 20), ratios measured in one run on this machine:
//  - 16 frames of 512x512 encoded in-process (MP4 x264 crf 23, GIF with palettegen/paletteuse, animated WebP q80)
//    against the command-line tools doing the same encode from PNG files (`ffmpeg`, `img2webp`; Debian packages
//    ffmpeg and webp, not needed otherwise: the comparison is skipped when they are missing);
//  - a contact sheet of the 16 frames against one SD1.5 UNet step at 512x512 (a 16-frame, 20-step animation makes
//    16 x 20 x 2 such row-steps; the sheet's share of the animation is below sheet / (16 * 20 * step)).
//   build/bench/atelier_bench --benchmark_filter=Export
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_format.h"
#include "av_video_writer.h"
#include "contact_sheet.h"
#include "engine/models/unet.h"
#include "image/image_codec.h"
#include "random_weights.h"
#include "webp_anim_writer.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;

double Seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<cv::Mat> Frames(int n, int size) {
  std::vector<cv::Mat> frames;
  for (int i = 0; i < n; ++i) {
    cv::Mat m(size, size, CV_8UC3);
    for (int y = 0; y < size; ++y) {
      for (int x = 0; x < size; ++x) {
        m.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(40 + x * 128 / size + i * 4), static_cast<uint8_t>(30 + y * 180 / size),
                                          static_cast<uint8_t>(128 + 60 * std::sin((x + y + 3 * i) * 0.02)));
      }
    }
    frames.push_back(m);
  }
  return frames;
}

bool Have(const char* tool) { return std::system((std::string("command -v ") + tool + " >/dev/null 2>&1").c_str()) == 0; }

void BM_ExportVsCommandLineTools(benchmark::State& state) {
  const auto frames = Frames(16, 512);
  const fs::path dir = fs::temp_directory_path() / "atelier-export-bench";
  fs::create_directories(dir);
  for (size_t i = 0; i < frames.size(); ++i) {  // the tools' input (not timed)
    engine::PixelImage image;
    image.width = image.height = 512;
    image.pixels.assign(frames[i].data, frames[i].data + frames[i].total() * 3);
    std::ofstream(dir / absl::StrFormat("%05d.png", i), std::ios::binary) << *engine::EncodePng(image);
  }
  const bool tools = Have("ffmpeg") && Have("img2webp");
  double ours[3] = {0, 0, 0}, theirs[3] = {0, 0, 0};
  for (auto _ : state) {
    int k = 0;
    for (const char* format : {"mp4", "gif"}) {
      ours[k++] += Seconds([&] {
        exporter::VideoOptions o;
        o.format = format;
        o.width = o.height = 512;
        o.fps = 8;
        auto w = exporter::AvVideoWriter::Open(o);
        for (const auto& f : frames) (void)(*w)->AddFrame(f.data, 512, 512);
        benchmark::DoNotOptimize((*w)->Finish());
      });
    }
    ours[2] += Seconds([&] {
      exporter::WebpOptions o;
      o.width = o.height = 512;
      o.fps = 8;
      auto w = exporter::WebpAnimWriter::Open(o);
      for (const auto& f : frames) (void)(*w)->AddFrame(f.data, 512, 512);
      benchmark::DoNotOptimize((*w)->Finish());
    });
    if (tools) {
      const std::string in = (dir / "%05d.png").string(), out = dir.string();
      theirs[0] += Seconds([&] {
        (void)std::system(("ffmpeg -loglevel error -y -framerate 8 -i " + in +
                           " -c:v libx264 -crf 23 -pix_fmt yuv420p " + out + "/t.mp4").c_str());
      });
      theirs[1] += Seconds([&] {
        (void)std::system(("ffmpeg -loglevel error -y -framerate 8 -i " + in +
                           " -vf 'split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=sierra2_4a'"
                           " -loop 0 " + out + "/t.gif").c_str());
      });
      theirs[2] += Seconds([&] {
        (void)std::system(("cd " + out + " && img2webp -loop 0 -d 125 -lossy -q 80 0*.png -o t.webp >/dev/null").c_str());
      });
    }
  }
  const double n = static_cast<double>(state.iterations());
  const char* names[3] = {"mp4", "gif", "webp"};
  for (int k = 0; k < 3; ++k) {
    state.counters[std::string(names[k]) + "_s"] = ours[k] / n;
    if (tools) state.counters[std::string(names[k]) + "_vs_tool"] = ours[k] / theirs[k];
  }
  fs::remove_all(dir);
}
BENCHMARK(BM_ExportVsCommandLineTools)->Iterations(2)->Unit(benchmark::kSecond);

void BM_ExportContactSheetVsUNetStep(benchmark::State& state) {
  const auto frames = Frames(16, 512);
  engine::UNetConfig config;  // SD1.5
  auto unet = engine::UNet::Create(config, bench::RandomWeights(engine::UNet::ParameterShapes(config)));
  const at::Tensor x = at::randn({2, 4, 64, 64}), t = at::full({2}, 500.0), ctx = at::randn({2, 77, 768});
  const double step = Seconds([&] { benchmark::DoNotOptimize((*unet)->Forward(x, t, ctx)); });
  double sheet_s = 0;
  for (auto _ : state) {
    sheet_s += Seconds([&] {
      exporter::SheetOptions o;
      o.header = "a cat\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Size: 512x512";
      auto sheet = exporter::ContactSheet::Create(o);
      for (int i = 0; i < 16; ++i) (void)(*sheet)->Add(frames[static_cast<size_t>(i)], i, i);
      auto image = (*sheet)->Finish(1LL << 26);
      engine::PixelImage p;
      p.width = image->cols;
      p.height = image->rows;
      p.pixels.assign(image->data, image->data + image->total() * 3);
      benchmark::DoNotOptimize(engine::EncodePng(p));
    });
  }
  sheet_s /= static_cast<double>(state.iterations());
  state.counters["sheet_s"] = sheet_s;
  state.counters["unet_step_s"] = step;
  // 16 frames x 20 steps, cond + uncond in one call per step (2 rows per frame: the step measured had 2 rows).
  state.counters["sheet_share_of_animation"] = sheet_s / (16 * 20 * step);
}
BENCHMARK(BM_ExportContactSheetVsUNetStep)->Iterations(3)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace atelier
