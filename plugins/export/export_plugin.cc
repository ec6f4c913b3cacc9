// export: files made from a job's frames as they arrive (ABI 1.1 `frame` hook), streamed to the client as artifacts
// when the job's frames end (`frames_finish`): a contact sheet, GIF / MP4 / WebM through FFmpeg's libraries,
// animated WebP through libwebp, the PNG frames and the infotext, named as sd-webui-animatediff names them
// ("{seed}[-{request_id}].gif"; clients put WebUI's "{seq:05}-" in front when they save). Each file carries the
// infotext where the extension puts it. Enabled by
//   "alwayson_scripts": {"export": {"args": [{"enabled": true, "formats": ["GIF", "SHEET"], "fps": 8}]}}
// or by another plugin through feed_plugin (AnimateDiff's format list and fps). Stand-alone: Plugins.Invoke export
// "export" with {"images": [base64...], "formats": [...], ...} makes the same files from images a client has.
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "atelier/sdk/args.h"
#include "atelier/sdk/descriptor.h"
#include "atelier/sdk/status.h"
#include "atelier/sdk/tensor.h"
#include "av_video_writer.h"
#include "contact_sheet.h"
#include "export_options.h"
#include "webp_anim_writer.h"

namespace {

namespace sdk = atelier::sdk;
namespace ex = atelier::exporter;
using nlohmann::json;

constexpr int64_t kMaxSheetPixels = 8192LL * 8192;

struct PluginState {
  const atelier_host_api* host = nullptr;
};
PluginState* Plugin(atelier_plugin_state* s) { return reinterpret_cast<PluginState*>(s); }

// float32 [3, H, W] in [0, 1] -> uint8 RGB (WebUI's 255 * x, truncated).
cv::Mat RgbOf(const at::Tensor& chw) {
  at::Tensor hwc = (chw.to(at::kFloat).clamp(0, 1) * 255.0).to(at::kByte).permute({1, 2, 0}).contiguous();
  return cv::Mat(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3, hwc.data_ptr()).clone();
}

absl::StatusOr<std::string> EncodePng(const atelier_host_api* host, const cv::Mat& rgb, const std::string& infotext) {
  cv::Mat c = rgb.isContinuous() ? rgb : rgb.clone();
  sdk::Borrow b(at::from_blob(c.data, {c.rows, c.cols, 3}, at::kByte));
  atelier_bytes out{};
  atelier_error err{};
  if (atelier_status s = host->image_encode(host, b.get(), "png", 100, infotext.c_str(), &out, &err); s != ATELIER_OK) {
    return sdk::FromAbi(s, err);
  }
  std::string png(reinterpret_cast<const char*>(out.data), out.size);
  host->bytes_free(&out);
  return png;
}

// One job's (or invoke's) files, written frame by frame.
class Exporter {
 public:
  Exporter(const atelier_host_api* host, atelier_job* job, ex::ExportOptions options)
      : host_(host), job_(job), options_(std::move(options)) {}

  bool Wants(const std::string& f) const {
    return std::find(options_.formats.begin(), options_.formats.end(), f) != options_.formats.end();
  }

  absl::Status AddFrame(const cv::Mat& rgb, int64_t seed, const std::string& infotext) {
    const int index = frames_++;
    if (index == 0) {
      seed_ = seed;
      infotext_ = infotext;
      width_ = rgb.cols;
      height_ = rgb.rows;
      prefix_ = absl::StrCat(seed, options_.request_id.empty() ? "" : "-" + options_.request_id);
      Open();
    }
    for (auto& [format, writer] : video_) {
      if (writer == nullptr) continue;
      if (auto s = writer->AddFrame(rgb.data, rgb.cols, rgb.rows); !s.ok()) Fail(format, s), writer.reset();
    }
    if (webp_ != nullptr) {
      if (auto s = webp_->AddFrame(rgb.data, rgb.cols, rgb.rows); !s.ok()) Fail("WEBP", s), webp_.reset();
    }
    if (sheet_ != nullptr) {
      if (auto s = sheet_->Add(rgb, index, seed); !s.ok()) Fail("SHEET", s), sheet_.reset();
    }
    if (Wants("PNG")) {
      auto png = EncodePng(host_, rgb, infotext);
      if (!png.ok()) return png.status();
      if (auto s = Emit(absl::StrFormat("%s-%05d.png", prefix_, index), "image/png", *png); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Writes what is left; an error names every file that could not be made (the images are already delivered).
  absl::Status Finish() {
    if (frames_ == 0) return absl::InvalidArgumentError("export: no frames to export");
    const std::map<std::string, std::pair<const char*, const char*>> kinds = {
        {"GIF", {"gif", "image/gif"}}, {"MP4", {"mp4", "video/mp4"}}, {"WEBM", {"webm", "video/webm"}}};
    for (auto& [format, writer] : video_) {
      if (writer == nullptr) continue;
      auto bytes = writer->Finish();
      if (!bytes.ok()) {
        Fail(format, bytes.status());
        continue;
      }
      const auto& [ext, mime] = kinds.at(format);
      if (auto s = Emit(absl::StrCat(prefix_, ".", ext), mime, *bytes); !s.ok()) return s;
    }
    if (webp_ != nullptr) {
      auto bytes = webp_->Finish();
      if (!bytes.ok()) {
        Fail("WEBP", bytes.status());
      } else if (auto s = Emit(absl::StrCat(prefix_, ".webp"), "image/webp", *bytes); !s.ok()) {
        return s;
      }
    }
    if (sheet_ != nullptr) {
      auto image = sheet_->Finish(kMaxSheetPixels);
      if (!image.ok()) {
        Fail("SHEET", image.status());
      } else {
        auto png = EncodePng(host_, *image, infotext_);
        if (!png.ok()) return png.status();
        if (auto s = Emit(absl::StrCat(prefix_, "-sheet.png"), "image/png", *png); !s.ok()) return s;
      }
    }
    if (Wants("TXT")) {
      if (auto s = Emit(absl::StrCat(prefix_, ".txt"), "text/plain", infotext_); !s.ok()) return s;
    }
    if (failures_.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("export: ", absl::StrJoin(failures_, "; ")));
  }

  const std::vector<std::string>& files() const { return files_; }
  void set_header(std::string header) { header_ = std::move(header); }

 private:
  void Open() {
    for (const char* f : {"GIF", "MP4", "WEBM"}) {
      if (!Wants(f)) continue;
      ex::VideoOptions v;
      v.format = f == std::string("GIF") ? "gif" : f == std::string("MP4") ? "mp4" : "webm";
      v.width = width_;
      v.height = height_;
      v.fps = options_.fps;
      v.crf = v.format == "webm" ? options_.webm_crf : options_.crf;
      v.loop = options_.loop;
      v.dither = options_.dither;
      v.comment = infotext_;
      auto w = ex::AvVideoWriter::Open(v);
      if (!w.ok()) {
        Fail(f, w.status());
        continue;
      }
      video_[f] = std::move(*w);
    }
    if (Wants("WEBP")) {
      ex::WebpOptions w;
      w.width = width_;
      w.height = height_;
      w.fps = options_.fps;
      w.loop = options_.loop;
      w.quality = options_.webp_quality;
      w.lossless = options_.webp_lossless;
      w.comment = infotext_;
      auto writer = ex::WebpAnimWriter::Open(w);
      if (writer.ok()) webp_ = std::move(*writer); else Fail("WEBP", writer.status());
    }
    if (Wants("SHEET")) {
      ex::SheetOptions s = options_.sheet;
      s.header = s.header.empty() ? "" : header_;
      auto sheet = ex::ContactSheet::Create(s);
      if (sheet.ok()) sheet_ = std::move(*sheet); else Fail("SHEET", sheet.status());
    }
  }

  void Fail(const std::string& format, const absl::Status& s) {
    failures_.push_back(absl::StrCat(format, " failed: ", s.message()));
  }

  absl::Status Emit(const std::string& name, const char* mime, const std::string& bytes) {
    atelier_error err{};
    if (atelier_status s = host_->emit_artifact(job_, name.c_str(), mime, bytes.data(), bytes.size(), &err);
        s != ATELIER_OK) {
      return sdk::FromAbi(s, err);
    }
    files_.push_back(name);
    return absl::OkStatus();
  }

  const atelier_host_api* host_;
  atelier_job* job_;
  ex::ExportOptions options_;
  std::string header_;
  int frames_ = 0, width_ = 0, height_ = 0;
  int64_t seed_ = 0;
  std::string infotext_, prefix_;
  std::map<std::string, std::unique_ptr<ex::AvVideoWriter>> video_;
  std::unique_ptr<ex::WebpAnimWriter> webp_;
  std::unique_ptr<ex::ContactSheet> sheet_;
  std::vector<std::string> failures_, files_;
};

struct JobState {
  std::unique_ptr<Exporter> exporter;
};
JobState* Job(atelier_job_state* s) { return reinterpret_cast<JobState*>(s); }

absl::StatusOr<ex::ExportOptions> OptionsFrom(const char* args_json) {
  auto args = sdk::Args::Parse(args_json);
  if (!args.ok()) return args.status();
  const auto units = args->Units({"enabled"});
  if (units.empty()) return ex::ExportOptions{};
  return ex::ParseExportOptions(units[0]);
}

atelier_status Init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  auto* s = new (std::nothrow) PluginState{host};
  if (s == nullptr) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  if (ex::DefaultFontPath().empty()) {
    host->log(host, ATELIER_LOG_WARNING, "no DejaVu font found: contact sheets will fail (install fonts-dejavu-core)");
  }
  *state = reinterpret_cast<atelier_plugin_state*>(s);
  return ATELIER_OK;
}

void Finalize(atelier_plugin_state* state) { delete Plugin(state); }

atelier_status Process(atelier_plugin_state* state, atelier_job* job, const atelier_job_info* info,
                       const char* args_json, atelier_job_state** job_state, atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    auto options = OptionsFrom(args_json);
    if (!options.ok()) return options.status();
    if (!options->enabled) return absl::OkStatus();
    if (options->formats.empty()) return absl::InvalidArgumentError(absl::StrCat("export: no formats; formats: ", ex::FormatList()));
    // A contact sheet that cannot fit is refused before the job samples.
    const bool sheet = std::find(options->formats.begin(), options->formats.end(), "SHEET") != options->formats.end();
    if (sheet) {
      auto probe = ex::ContactSheet::Create(options->sheet);
      if (!probe.ok()) return probe.status();
      const cv::Size size = (*probe)->SizeFor(info->batch_size * info->n_iter, info->width, info->height);
      if (static_cast<int64_t>(size.width) * size.height > kMaxSheetPixels) {
        return absl::InvalidArgumentError(absl::StrCat("export: the contact sheet would be ", size.width, "x",
                                                       size.height, " pixels, over the limit of ", kMaxSheetPixels,
                                                       "; use a smaller sheet.cell_size or fewer sheet.columns"));
      }
    }
    auto js = std::make_unique<JobState>();
    const std::string header = absl::StrCat(info->prompt != nullptr ? info->prompt : "", "\n", "Steps: ", info->steps,
                                            ", Sampler: ", info->sampler_name != nullptr ? info->sampler_name : "",
                                            ", CFG scale: ", info->cfg_scale, ", Seed: ", info->seed, ", Size: ",
                                            info->width, "x", info->height);
    js->exporter = std::make_unique<Exporter>(Plugin(state)->host, job, *std::move(options));
    js->exporter->set_header(header);
    *job_state = reinterpret_cast<atelier_job_state*>(js.release());
    return absl::OkStatus();
  });
}

void JobEnd(atelier_plugin_state*, atelier_job_state* job_state) { delete Job(job_state); }

// Each frame as it is decoded: into every encoder now, so encoding overlaps the next frames' sampling.
atelier_status Frame(atelier_plugin_state*, atelier_job_state* job_state, atelier_frame_params* params,
                     atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    const atelier_frame* f = params->frame;
    return Job(job_state)->exporter->AddFrame(RgbOf(sdk::View(f->image)), f->seed, f->infotext != nullptr ? f->infotext : "");
  });
}

atelier_status FramesFinish(atelier_plugin_state*, atelier_job_state* job_state, const atelier_frames_finish_params*,
                            atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status { return Job(job_state)->exporter->Finish(); });
}

// Stand-alone: {"images": [base64...], "seeds": [...], "infotext": "...", "formats": [...], "fps": ..., ...}.
atelier_status Invoke(atelier_plugin_state* state, atelier_job* job, const char* method, const char* args_json,
                      atelier_error* err) {
  return sdk::Guard(err, [&]() -> absl::Status {
    const std::string m = method != nullptr ? method : "";
    if (m != "export") return absl::UnimplementedError(absl::StrCat("unknown method '", m.substr(0, 64), "'; methods: export"));
    const atelier_host_api* host = Plugin(state)->host;
    json a = json::parse(args_json != nullptr ? args_json : "null", nullptr, false);
    if (!a.is_object()) return absl::InvalidArgumentError("export: the arguments must be a JSON object");
    a["enabled"] = true;
    auto options = ex::ParseExportOptions(a);
    if (!options.ok()) return options.status();
    const json images = a.value("images", json::array());
    if (!images.is_array() || images.empty()) return absl::InvalidArgumentError("export: no images (\"images\": [base64, ...])");
    Exporter exporter(host, job, *std::move(options));
    exporter.set_header(a.value("infotext", ""));
    const json seeds = a.value("seeds", json::array());
    for (size_t i = 0; i < images.size(); ++i) {
      if (host->is_cancelled(job)) return absl::CancelledError("export cancelled");
      std::string bytes;
      if (!images[i].is_string() || !absl::Base64Unescape(images[i].get<std::string>(), &bytes)) {
        return absl::InvalidArgumentError(absl::StrCat("export: image ", i, " is not base64"));
      }
      DLManagedTensor* decoded = nullptr;
      atelier_error e{};
      if (atelier_status s = host->image_decode(host, bytes.data(), bytes.size(), &decoded, &e); s != ATELIER_OK) {
        return absl::InvalidArgumentError(absl::StrCat("export: image ", i, " cannot be decoded: ", e.message));
      }
      at::Tensor hwc = sdk::Adopt(decoded).narrow(2, 0, 3).contiguous();
      cv::Mat rgb(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3, hwc.data_ptr());
      const int64_t seed = i < seeds.size() && seeds[i].is_number_integer() ? seeds[i].get<int64_t>() : static_cast<int64_t>(i);
      if (auto s = exporter.AddFrame(rgb.clone(), seed, a.value("infotext", "")); !s.ok()) return s;
      host->report_progress(job, "export", static_cast<int32_t>(i + 1), static_cast<int32_t>(images.size()), nullptr, &e);
    }
    if (auto s = exporter.Finish(); !s.ok()) return s;
    atelier_error e{};
    const std::string result = json{{"files", exporter.files()}}.dump();
    return sdk::FromAbi(host->set_invoke_result(job, result.c_str(), &e), e);
  });
}

constexpr const char* kSchema = R"json({
  "type": "object",
  "description": "{\"args\": [{\"enabled\": true, \"formats\": [\"GIF\", \"SHEET\"], ...}]}",
  "properties": {"args": {"type": "array", "items": {"$ref": "#/definitions/options"}}},
  "definitions": {
    "options": {
      "type": "object",
      "properties": {
        "enabled": {"type": "boolean", "default": false},
        "formats": {"type": "array", "items": {"enum": ["GIF", "MP4", "WEBM", "WEBP", "PNG", "TXT", "SHEET"]}, "default": ["GIF", "PNG"]},
        "fps": {"type": "number", "exclusiveMinimum": 0, "maximum": 240, "default": 8},
        "loop_number": {"type": "integer", "minimum": 0, "default": 0, "description": "0 = forever"},
        "gif_dither": {"enum": ["bayer", "heckbert", "floyd_steinberg", "sierra2", "sierra2_4a", "none"], "default": "sierra2_4a"},
        "crf": {"type": "integer", "minimum": 0, "maximum": 51, "default": 23},
        "webm_crf": {"type": "integer", "minimum": 0, "maximum": 63, "default": 32},
        "webp_quality": {"type": "number", "minimum": 0, "maximum": 100, "default": 80},
        "webp_lossless": {"type": "boolean", "default": false},
        "request_id": {"type": "string", "default": ""},
        "sheet": {
          "type": "object",
          "properties": {
            "columns": {"type": "integer", "minimum": 0, "default": 0},
            "cell_size": {"type": "integer", "minimum": 16, "maximum": 2048, "default": 256},
            "spacing": {"type": "integer", "minimum": 0, "default": 8},
            "background": {"type": "string", "default": "#ffffff"},
            "text_color": {"type": "string", "default": "#000000"},
            "label": {"enum": ["frame", "seed", "both", "none"], "default": "both"},
            "header": {"type": "boolean", "default": true},
            "font_size": {"type": "integer", "minimum": 6, "maximum": 96, "default": 14}
          }
        }
      }
    }
  }
})json";

}  // namespace

extern "C" ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t host_abi_major,
                                                                                        uint32_t host_abi_minor) {
  static const atelier_plugin_descriptor descriptor = [] {
    atelier_plugin_descriptor d = sdk::Descriptor("export", "1.0.0", 900);
    d.description = "Contact sheets, GIF / MP4 / WebM / animated WebP, PNG frames and TXT from a job's frames";
    d.params_schema_json = kSchema;
    d.init = Init;
    d.finalize = Finalize;
    d.process = Process;
    d.job_end = JobEnd;
    d.frame = Frame;
    d.frames_finish = FramesFinish;
    d.invoke = Invoke;
    return d;
  }();
  return host_abi_major == ATELIER_PLUGIN_ABI_MAJOR && host_abi_minor >= 1 ? &descriptor : nullptr;
}
