#include "generate_command.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "atelier/v1/generation.grpc.pb.h"
#include "image/image_formats.h"
#include "artifact_files.h"
#include "event_printer.h"
#include "exit_codes.h"
#include "webui_payload.h"

namespace atelier::cli {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream data;
  data << in.rdbuf();
  return data.str();
}

// A WebUI /sdapi/v1/txt2img or img2img payload file as a GenerateRequest (webui_payload.h).
absl::StatusOr<v1::GenerateRequest> FromWebUiJson(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  return client::WebUiPayloadToRequest(*text, path);
}

absl::Status SetStructValue(google::protobuf::Struct* target, const std::string& key, const std::string& json_text,
                            bool fallback_to_string) {
  google::protobuf::Value value;
  if (!google::protobuf::util::JsonStringToMessage(json_text, &value).ok()) {
    if (!fallback_to_string) return absl::InvalidArgumentError(absl::StrCat("'", json_text, "' is not valid JSON"));
    value.set_string_value(json_text);
  }
  (*target->mutable_fields())[key] = value;
  return absl::OkStatus();
}

absl::StatusOr<v1::ImageFormat> ParseFormat(const std::string& name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "png") return v1::IMAGE_FORMAT_PNG;
  if (lower == "jpg" || lower == "jpeg") return v1::IMAGE_FORMAT_JPEG;
  if (lower == "webp") return v1::IMAGE_FORMAT_WEBP;
  return absl::InvalidArgumentError(absl::StrCat("image format '", name, "' is not one of png, jpeg, webp"));
}

absl::StatusOr<v1::PreviewMethod> ParsePreview(const std::string& name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "none") return v1::PREVIEW_METHOD_NONE;
  if (lower == "approx-cheap") return v1::PREVIEW_METHOD_APPROX_CHEAP;
  if (lower == "approx-comfyui") return v1::PREVIEW_METHOD_APPROX_COMFYUI;
  if (lower == "taesd") return v1::PREVIEW_METHOD_TAESD;
  if (lower == "full") return v1::PREVIEW_METHOD_FULL;
  return absl::InvalidArgumentError(
      absl::StrCat("preview method '", name, "' is not one of none, approx-cheap, approx-comfyui, taesd, full"));
}

// WebUI's file names: a five-digit counter continuing the folder's highest, then the seed.
const char* ExtensionOf(const std::string& mime) {
  if (mime == "image/jpeg") return "jpg";
  if (mime == "image/webp") return "webp";
  return "png";
}

bool WriteFile(const fs::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  return static_cast<bool>(out);
}

}  // namespace

bool GenerateFlags::Given(const std::string& name) const {
  const auto it = options.find(name);
  return it != options.end() && it->second->count() > 0;
}

void AddGenerateFlags(CLI::App* c, GenerateFlags& f) {
  // Options are remembered by their first long name ("-p,--prompt" -> "--prompt").
  auto add = [&](const std::string& names, auto& value, const std::string& help) {
    CLI::Option* option = c->add_option(names, value, help);
    const auto at = names.find("--");
    f.options[names.substr(at, names.find(',', at) - at)] = option;
    return option;
  };
  add("--json", f.json_file, "a WebUI /sdapi/v1/txt2img or img2img payload (JSON file); flags given too override it");
  add("--from", f.from_image,
      "re-run an image: its infotext (PNG/JPEG/WebP, NovelAI PNGs too) fills every setting the flags leave unset");
  add("-p,--prompt", f.prompt, "the prompt (WebUI syntax)");
  add("-n,--negative-prompt", f.negative_prompt, "the negative prompt");
  add("--steps", f.steps, "sampling steps (default 20)");
  add("--sampler,--sampler-name", f.sampler, "sampler, e.g. \"DPM++ 2M\", \"Euler a\" (default Euler)");
  add("--scheduler", f.scheduler, "schedule type, e.g. Karras, Exponential (default Automatic)");
  add("--cfg-scale", f.cfg_scale, "classifier-free guidance scale (default 7)");
  add("--seed", f.seed, "seed; -1 = random (default)");
  add("--subseed", f.subseed, "variation seed");
  add("--subseed-strength", f.subseed_strength, "variation strength 0..1");
  add("-W,--width", f.width, "width in pixels, a multiple of 8 (default: the model's native size, 512 for SD1.x)");
  add("-H,--height", f.height, "height in pixels, a multiple of 8 (default: the model's native size, 512 for SD1.x)");
  add("--batch-size", f.batch_size, "images per batch");
  add("--n-iter,--batch-count", f.n_iter, "number of batches");
  add("--clip-skip", f.clip_skip, "CLIP_stop_at_last_layers (1..12)");
  add("--eta", f.eta, "eta of ancestral/SDE samplers and DDIM");
  add("--ensd,--eta-noise-seed-delta", f.ensd, "eta_noise_seed_delta (e.g. 31337)");
  add("--randn-source,--rng", f.randn_source, "GPU, CPU or NV noise (WebUI's randn_source)");
  add("--checkpoint", f.checkpoint, "checkpoint for this job (sd_model_checkpoint); it stays loaded");
  add("--vae", f.vae, "VAE for this job (sd_vae): Automatic, None or a file in models/VAE");
  add("--job-id", f.job_id, "job id to use (force_task_id)");
  if (f.img2img) {
    add("-i,--init-image", f.init_image, "the init image (PNG, JPEG or WebP)");
    add("--denoising-strength", f.denoising_strength, "0..1 (default 0.75)");
    add("--resize-mode", f.resize_mode,
        "0 Just resize, 1 Crop and resize, 2 Resize and fill, 3 Just resize (latent upscale)");
    add("--noise-multiplier", f.noise_multiplier, "initial_noise_multiplier (default 1)");
    add("-m,--mask", f.mask, "inpainting mask (any image; white = repaint, black = keep)");
    add("--mask-blur", f.mask_blur, "mask blur in pixels (default 4)");
    add("--inpainting-fill", f.inpainting_fill, "masked content: 0 fill, 1 original, 2 latent noise, 3 latent nothing");
    add("--inpaint-area", f.inpaint_area, "\"Only masked\" (default) or \"Whole picture\"");
    add("--padding", f.padding, "\"Only masked\" padding in pixels");
    f.options["--invert-mask"] = c->add_flag("--invert-mask", f.invert_mask, "repaint what the mask keeps");
  } else {
    f.options["--hires"] = c->add_flag("--hires,--enable-hr", f.enable_hr, "hires fix: a second, upscaled pass");
    add("--hr-scale", f.hr_scale, "hires upscale factor (default 2)");
    add("--hr-steps", f.hr_steps, "hires steps (0 = same as --steps)");
    add("--hr-resize-x", f.hr_resize_x, "hires target width (instead of --hr-scale)");
    add("--hr-resize-y", f.hr_resize_y, "hires target height");
    add("--hr-upscaler", f.hr_upscaler, "Latent (default), Latent (nearest-exact), ..., None, Lanczos, Nearest");
    add("--denoising-strength", f.denoising_strength, "hires denoising strength (default 0.75)");
  }
  add("--override", f.overrides, "KEY=VALUE WebUI option for this job (VALUE is JSON, else text); repeatable");
  add("--script", f.scripts, "NAME=JSON always-on plugin arguments, e.g. 'invert={\"args\":[true,1.0]}'; repeatable");
  add("--controlnet", f.controlnet,
      "a ControlNet unit: 'image=FILE,module=canny,model=control_v11p_sd15_canny,weight=1,...' (any field of "
      "sd-webui-controlnet's API unit; enabled by default); repeatable");
  add("--animatediff", f.animatediff,
      "an AnimateDiff clip: 'model=mm_sd15_v3.safetensors,video_length=16,batch_size=16,fps=8,format=GIF+MP4,"
      "interp=RIFE,interp_x=2' (any field of sd-webui-animatediff's API; enabled; lists joined with +)");
  add("--preview", f.preview_method, "live previews: none, approx-cheap, approx-comfyui, taesd, full")
      ->capture_default_str();
  add("--preview-every", f.preview_every, "a preview every N steps (default 1)");
  add("--preview-format", f.preview_format, "preview encoding: jpeg, png, webp")->capture_default_str();
  add("--previews", f.previews_dir, "save every preview into this folder");
  add("--format", f.output_format, "result encoding: png (default), jpeg, webp");
  add("-o,--output-dir", f.output_dir, "where results are written")->capture_default_str();
  f.options["--quiet"] = c->add_flag("-q,--quiet", f.quiet, "no progress output; print only the saved files");
  f.options["--no-retry"] = c->add_flag("--no-retry", f.no_retry,
                                        "a job the daemon dropped mid-way (it restarted: UNAVAILABLE) is resubmitted "
                                        "once with the same seeds unless this is given");
}

absl::StatusOr<v1::GenerateRequest> BuildRequest(const GenerateFlags& f) {
  v1::GenerateRequest r;
  if (f.Given("--json")) {
    auto parsed = FromWebUiJson(f.json_file);
    if (!parsed.ok()) return parsed.status();
    r = *std::move(parsed);
  }
  if (r.mode() == v1::MODE_UNSPECIFIED) r.set_mode(f.img2img ? v1::MODE_IMG2IMG : v1::MODE_TXT2IMG);
  if (f.Given("--from")) {
    auto image = ReadFile(f.from_image);
    if (!image.ok()) return image.status();
    auto infotext = engine::ReadInfotext(*image);
    if (!infotext.ok()) return absl::InvalidArgumentError(absl::StrCat(f.from_image, ": ", infotext.status().message()));
    if (infotext->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(f.from_image, " has no generation parameters to re-run"));
    }
    r.set_infotext(*infotext);
  }
  // The UI's default steps, not the API's 50 (an infotext or payload brings its own).
  if (!f.Given("--json") && !f.Given("--from") && !f.Given("--steps")) r.set_steps(20);
  if (f.Given("--prompt")) r.set_prompt(f.prompt);
  if (f.Given("--negative-prompt")) r.set_negative_prompt(f.negative_prompt);
  if (f.Given("--steps")) r.set_steps(f.steps);
  if (f.Given("--sampler")) r.set_sampler_name(f.sampler);
  if (f.Given("--scheduler")) r.set_scheduler(f.scheduler);
  if (f.Given("--cfg-scale")) r.set_cfg_scale(f.cfg_scale);
  if (f.Given("--seed")) r.set_seed(f.seed);
  if (f.Given("--subseed")) r.set_subseed(f.subseed);
  if (f.Given("--subseed-strength")) r.set_subseed_strength(f.subseed_strength);
  if (f.Given("--width")) r.set_width(f.width);
  if (f.Given("--height")) r.set_height(f.height);
  if (f.Given("--batch-size")) r.set_batch_size(f.batch_size);
  if (f.Given("--n-iter")) r.set_n_iter(f.n_iter);
  if (f.Given("--eta")) r.set_eta(f.eta);
  if (f.Given("--job-id")) r.set_force_task_id(f.job_id);
  if (f.Given("--denoising-strength")) r.set_denoising_strength(f.denoising_strength);
  if (f.Given("--resize-mode")) r.set_resize_mode(f.resize_mode);
  if (f.Given("--noise-multiplier")) r.set_initial_noise_multiplier(f.noise_multiplier);
  auto* overrides = r.mutable_override_settings();
  auto set_number = [&](const char* key, double v) { (*overrides->mutable_fields())[key].set_number_value(v); };
  auto set_text = [&](const char* key, const std::string& v) { (*overrides->mutable_fields())[key].set_string_value(v); };
  if (f.Given("--clip-skip")) set_number("CLIP_stop_at_last_layers", f.clip_skip);
  if (f.Given("--ensd")) set_number("eta_noise_seed_delta", static_cast<double>(f.ensd));
  if (f.Given("--randn-source")) set_text("randn_source", f.randn_source);
  if (f.Given("--checkpoint")) set_text("sd_model_checkpoint", f.checkpoint);
  if (f.Given("--vae")) set_text("sd_vae", f.vae);
  for (const std::string& item : f.overrides) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--override '", item, "' is not KEY=VALUE"));
    }
    if (auto s = SetStructValue(overrides, item.substr(0, eq), item.substr(eq + 1), true); !s.ok()) return s;
  }
  for (const std::string& item : f.scripts) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--script '", item, "' is not NAME=JSON"));
    }
    if (auto s = SetStructValue(r.mutable_alwayson_scripts(), item.substr(0, eq), item.substr(eq + 1), false);
        !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--script ", item.substr(0, eq), ": ", s.message()));
    }
  }
  if (!f.controlnet.empty()) {
    auto& scripts = *r.mutable_alwayson_scripts()->mutable_fields();
    google::protobuf::ListValue* args =
        (*scripts["controlnet"].mutable_struct_value()->mutable_fields())["args"].mutable_list_value();
    for (const std::string& spec : f.controlnet) {
      auto& unit = *args->add_values()->mutable_struct_value()->mutable_fields();
      unit["enabled"].set_bool_value(true);
      for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
        const size_t eq = item.find('=');
        if (eq == absl::string_view::npos || eq == 0) {
          return absl::InvalidArgumentError(absl::StrCat("--controlnet '", spec, "': '", item, "' is not key=value"));
        }
        const std::string key(item.substr(0, eq)), value(item.substr(eq + 1));
        if (key == "image" || key == "mask") {
          auto bytes = ReadFile(value);
          if (!bytes.ok()) return bytes.status();
          unit[key].set_string_value(absl::Base64Escape(*bytes));
          continue;
        }
        double number = 0;
        if (value == "true" || value == "false") {
          unit[key].set_bool_value(value == "true");
        } else if (absl::SimpleAtod(value, &number)) {
          unit[key].set_number_value(number);
        } else {
          unit[key].set_string_value(value);
        }
      }
    }
  }
  if (f.Given("--animatediff")) {
    auto& unit = *(*(*r.mutable_alwayson_scripts()->mutable_fields())["AnimateDiff"].mutable_struct_value()
                        ->mutable_fields())["args"]
                      .mutable_list_value()
                      ->add_values()
                      ->mutable_struct_value()
                      ->mutable_fields();
    unit["enable"].set_bool_value(true);
    for (absl::string_view item : absl::StrSplit(f.animatediff, ',', absl::SkipEmpty())) {
      const size_t eq = item.find('=');
      if (eq == absl::string_view::npos || eq == 0) {
        return absl::InvalidArgumentError(absl::StrCat("--animatediff '", f.animatediff, "': '", item, "' is not key=value"));
      }
      const std::string key(item.substr(0, eq)), value(item.substr(eq + 1));
      double number = 0;
      if (key == "format") {  // a list: GIF+MP4
        auto* list = unit[key].mutable_list_value();
        for (absl::string_view v : absl::StrSplit(value, '+', absl::SkipEmpty())) list->add_values()->set_string_value(std::string(v));
      } else if (value == "true" || value == "false") {
        unit[key].set_bool_value(value == "true");
      } else if (absl::SimpleAtod(value, &number) && key != "model" && key != "request_id") {
        unit[key].set_number_value(number);
      } else {
        unit[key].set_string_value(value);
      }
    }
  }
  if (f.Given("--mask")) {
    auto mask = ReadFile(f.mask);
    if (!mask.ok()) return mask.status();
    r.set_mask(*std::move(mask));
  }
  if (f.Given("--mask-blur")) r.set_mask_blur(f.mask_blur);
  if (f.Given("--inpainting-fill")) r.set_inpainting_fill(f.inpainting_fill);
  if (f.Given("--inpaint-area")) {
    if (f.inpaint_area != "Only masked" && f.inpaint_area != "Whole picture") {
      return absl::InvalidArgumentError("--inpaint-area is \"Only masked\" or \"Whole picture\"");
    }
    r.set_inpaint_full_res(f.inpaint_area == "Only masked");
  }
  if (f.Given("--padding")) r.set_inpaint_full_res_padding(f.padding);
  if (f.Given("--invert-mask")) r.set_inpainting_mask_invert(f.invert_mask ? 1 : 0);
  if (f.Given("--hires")) r.set_enable_hr(f.enable_hr);
  if (f.Given("--hr-scale")) r.set_hr_scale(f.hr_scale);
  if (f.Given("--hr-steps")) r.set_hr_second_pass_steps(f.hr_steps);
  if (f.Given("--hr-resize-x")) r.set_hr_resize_x(f.hr_resize_x);
  if (f.Given("--hr-resize-y")) r.set_hr_resize_y(f.hr_resize_y);
  if (f.Given("--hr-upscaler")) r.set_hr_upscaler(f.hr_upscaler);
  if (f.Given("--init-image")) {
    auto image = ReadFile(f.init_image);
    if (!image.ok()) return image.status();
    r.clear_init_images();
    r.add_init_images(*std::move(image));
  }
  if (f.img2img && r.init_images_size() == 0) {
    return absl::InvalidArgumentError("img2img needs --init-image FILE (or init_images in --json)");
  }
  auto method = ParsePreview(f.preview_method);
  if (!method.ok()) return method.status();
  if (f.Given("--preview") || !r.preview().method()) r.mutable_preview()->set_method(*method);
  auto preview_format = ParseFormat(f.preview_format);
  if (!preview_format.ok()) return preview_format.status();
  r.mutable_preview()->set_format(*preview_format);
  if (f.Given("--preview-every")) r.mutable_preview()->set_every_n_steps(f.preview_every);
  if (f.Given("--format")) {
    auto format = ParseFormat(f.output_format);
    if (!format.ok()) return format.status();
    r.mutable_output()->set_format(*format);
  }
  return r;
}

int RunGenerate(const std::shared_ptr<grpc::Channel>& channel, const GenerateFlags& flags,
                const std::function<int(const grpc::Status&)>& fail) {
  auto request = BuildRequest(flags);
  if (!request.ok()) {
    std::fprintf(stderr, "atelier: %s\n", std::string(request.status().message()).c_str());
    return request.status().code() == absl::StatusCode::kNotFound ? kExitNotFound : kExitUsage;
  }
  std::error_code ec;
  fs::create_directories(flags.output_dir, ec);
  if (!flags.previews_dir.empty()) fs::create_directories(flags.previews_dir, ec);

  auto stub = v1::Generation::NewStub(channel);
  EventPrinter printer(stderr, isatty(STDERR_FILENO) != 0);
  v1::GenerateEvent event;
  int saved = 0, previews = 0;
  bool write_failed = false;
  ArtifactFiles artifacts(flags.output_dir);
  std::set<int> results_saved;  // image indexes, so a retried job does not save an image twice
  grpc::Status status;
  for (int attempt = 0; attempt < 2; ++attempt) {
    grpc::ClientContext context;
    context.AddMetadata("atelier-client", "atelier-cli");
    context.set_wait_for_ready(attempt > 0);  // a retry waits for the restarted daemon instead of failing fast
    auto reader = stub->Generate(&context, *request);
    bool accepted = false;
    std::vector<std::int64_t> seeds, subseeds;
    while (reader->Read(&event)) {
      accepted = true;
      if (event.has_started()) {
        seeds.assign(event.started().all_seeds().begin(), event.started().all_seeds().end());
        subseeds.assign(event.started().all_subseeds().begin(), event.started().all_subseeds().end());
      }
      if (event.has_result() && results_saved.count(event.result().index()) > 0) continue;
      if (!flags.quiet) printer.Print(event);
      if (event.has_artifact()) {
        auto written = artifacts.Add(event.artifact());
        if (!written.ok()) {
          std::fprintf(stderr, "atelier: %s\n", std::string(written.status().message()).c_str());
          write_failed = true;
        } else if (written->has_value()) {
          printer.Flush();
          std::printf("%s\n", (*written)->c_str());
          std::fflush(stdout);
        }
      }
      if (event.has_progress() && event.progress().has_preview() && !flags.previews_dir.empty()) {
        const v1::Image& image = event.progress().preview();
        const fs::path path = fs::path(flags.previews_dir) /
                              absl::StrFormat("%s-%05d.%s", event.job_id(), previews++, ExtensionOf(image.mime_type()));
        write_failed |= !WriteFile(path, image.data());
      }
      if (event.has_result()) {
        const v1::Result& result = event.result();
        const fs::path path = fs::path(flags.output_dir) /
                              absl::StrFormat("%05d-%d.%s", NextImageNumber(flags.output_dir), result.seed(),
                                              ExtensionOf(result.image().mime_type()));
        if (!WriteFile(path, result.image().data())) {
          std::fprintf(stderr, "atelier: cannot write %s\n", path.c_str());
          write_failed = true;
          continue;
        }
        ++saved;
        results_saved.insert(result.index());
        printer.Flush();
        std::printf("%s\n", path.c_str());
        if (!flags.quiet) std::printf("%s\n", result.infotext().c_str());
        std::fflush(stdout);
      }
    }
    printer.Flush();
    status = reader->Finish();
    // The daemon went away after taking the job (it crashed and its supervisor restarts it, or it was stopped): run
    // the job again once, with the seeds it had, so the user loses nothing.
    // UNAVAILABLE: the daemon went away (or drained). Through a proxy the same shows as a stream ended without a
    // status: nginx resets it (INTERNAL "Received RST_STREAM"), HAProxy drops its trailers (UNKNOWN "Stream
    // removed"); no daemon status reads like these.
    const bool dropped = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                         (status.error_code() == grpc::StatusCode::INTERNAL &&
                          absl::StartsWith(status.error_message(), "Received RST_STREAM")) ||
                         (status.error_code() == grpc::StatusCode::UNKNOWN && status.error_message() == "Stream removed");
    // Dropped before its first event reached us still counts when the call got through (the daemon can crash
    // between sending "queued" and our reading it); a call that never connected does not.
    const bool never_connected = absl::StartsWith(status.error_message(), "failed to connect") ||
                                 absl::StrContains(status.error_message(), "DNS resolution failed");
    if (!dropped || (!accepted && never_connected) || attempt > 0 || flags.no_retry) break;
    if (!seeds.empty()) {
      request->set_seed(seeds.front());
      if (!subseeds.empty()) request->set_subseed(subseeds.front());
    }
    std::fprintf(stderr, "atelier: the daemon dropped the job (%s); resubmitting it once%s\n",
                 status.error_message().c_str(),
                 request->seed() >= 0 ? absl::StrFormat(" with seed %d", request->seed()).c_str() : "");
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(120))) break;
  }
  if (!status.ok()) return fail(status);
  return write_failed ? kExitError : kExitOk;
}

int PrintInfo(const std::vector<std::string>& files) {
  int code = kExitOk;
  for (const std::string& file : files) {
    auto data = ReadFile(file);
    if (!data.ok()) {
      std::fprintf(stderr, "atelier: %s\n", std::string(data.status().message()).c_str());
      code = kExitNotFound;
      continue;
    }
    auto infotext = engine::ReadInfotext(*data);
    if (files.size() > 1) std::printf("== %s\n", file.c_str());
    if (!infotext.ok()) {
      std::fprintf(stderr, "atelier: %s: %s\n", file.c_str(), std::string(infotext.status().message()).c_str());
      code = kExitInvalid;
    } else if (infotext->empty()) {
      std::fprintf(stderr, "atelier: %s has no generation parameters\n", file.c_str());
      code = kExitError;
    } else {
      std::printf("%s\n", infotext->c_str());
    }
  }
  return code;
}

}  // namespace atelier::cli
