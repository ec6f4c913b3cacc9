#include "animatediff_args.h"

#include <cmath>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace atelier::animatediff {
namespace {

using nlohmann::json;

absl::Status WrongType(const std::string& field, const json& v, const char* want) {
  return absl::InvalidArgumentError(absl::StrCat("AnimateDiff ", field, " must be ", want, " (got ", v.type_name(), ")"));
}

absl::Status Int(const json& u, const std::string& field, int& out) {
  if (!u.contains(field) || u[field].is_null()) return absl::OkStatus();
  const json& v = u[field];
  if (!v.is_number() || std::floor(v.get<double>()) != v.get<double>()) return WrongType(field, v, "a whole number");
  const double d = v.get<double>();
  if (std::fabs(d) > 1e6) return absl::InvalidArgumentError(absl::StrCat("AnimateDiff ", field, " ", d, " is out of range"));
  out = static_cast<int>(d);
  return absl::OkStatus();
}

absl::Status Number(const json& u, const std::string& field, double& out) {
  if (!u.contains(field) || u[field].is_null()) return absl::OkStatus();
  if (!u[field].is_number() || !std::isfinite(u[field].get<double>())) return WrongType(field, u[field], "a number");
  out = u[field].get<double>();
  return absl::OkStatus();
}

absl::Status Bool(const json& u, const std::string& field, bool& out) {
  if (!u.contains(field) || u[field].is_null()) return absl::OkStatus();
  if (u[field].is_boolean()) {
    out = u[field].get<bool>();
  } else if (u[field].is_number()) {
    out = u[field].get<double>() != 0;
  } else {
    return WrongType(field, u[field], "true or false");
  }
  return absl::OkStatus();
}

absl::Status Text(const json& u, const std::string& field, std::string& out) {
  if (!u.contains(field) || u[field].is_null()) return absl::OkStatus();
  if (!u[field].is_string()) return WrongType(field, u[field], "a string");
  out = u[field].get<std::string>();
  return absl::OkStatus();
}

// Python's str() of a number as the infotext prints it ("8", "0.25").
std::string PyNumber(double v) {
  if (std::floor(v) == v && std::fabs(v) < 1e15) return absl::StrCat(static_cast<int64_t>(v));
  return absl::StrCat(v);
}

}  // namespace

const std::vector<std::string>& AnimateDiffFieldNames() {
  static const std::vector<std::string> names = {
      "model",          "enable",          "video_length",   "fps",           "loop_number",  "closed_loop",
      "batch_size",     "stride",          "overlap",        "format",        "interp",       "interp_x",
      "video_source",   "video_path",      "mask_path",      "freeinit_enable", "freeinit_filter", "freeinit_ds",
      "freeinit_dt",    "freeinit_iters",  "latent_power",   "latent_scale",  "last_frame",   "latent_power_last",
      "latent_scale_last", "request_id",   "is_i2i_batch",   "video_default", "prompt_scheduler"};
  return names;
}

absl::StatusOr<AnimateDiffArgs> ParseAnimateDiffArgs(const json& u) {
  if (!u.is_object()) return absl::InvalidArgumentError("AnimateDiff: the arguments must be an object");
  for (const auto& [key, value] : u.items()) {
    bool known = false;
    for (const auto& n : AnimateDiffFieldNames()) known |= n == key;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat("AnimateDiff has no field '", key.substr(0, 64), "'; fields: ",
                                                     absl::StrJoin(AnimateDiffFieldNames(), ", ")));
    }
  }
  AnimateDiffArgs a;
  absl::Status s;
  const auto check = [&s](absl::Status st) {
    if (s.ok()) s = std::move(st);
  };
  check(Text(u, "model", a.model));
  check(Bool(u, "enable", a.enable));
  check(Int(u, "video_length", a.video_length));
  check(Number(u, "fps", a.fps));
  check(Int(u, "loop_number", a.loop_number));
  std::string loop = ClosedLoopName(a.closed_loop);
  check(Text(u, "closed_loop", loop));
  check(Int(u, "batch_size", a.batch_size));
  check(Int(u, "stride", a.stride));
  check(Int(u, "overlap", a.overlap));
  check(Text(u, "interp", a.interp));
  check(Int(u, "interp_x", a.interp_x));
  check(Text(u, "video_path", a.video_path));
  check(Text(u, "mask_path", a.mask_path));
  check(Bool(u, "freeinit_enable", a.freeinit_enable));
  check(Text(u, "freeinit_filter", a.freeinit_filter));
  check(Number(u, "freeinit_ds", a.freeinit_ds));
  check(Number(u, "freeinit_dt", a.freeinit_dt));
  check(Int(u, "freeinit_iters", a.freeinit_iters));
  check(Number(u, "latent_power", a.latent_power));
  check(Number(u, "latent_scale", a.latent_scale));
  check(Text(u, "last_frame", a.last_frame));
  check(Number(u, "latent_power_last", a.latent_power_last));
  check(Number(u, "latent_scale_last", a.latent_scale_last));
  check(Text(u, "request_id", a.request_id));
  if (!s.ok()) return s;
  if (u.contains("video_source") && u["video_source"].is_string()) a.video_source = u["video_source"].get<std::string>();
  if (u.contains("format") && !u["format"].is_null()) {
    if (!u["format"].is_array()) return WrongType("format", u["format"], "a list such as [\"GIF\", \"MP4\"]");
    a.format.clear();
    for (const auto& f : u["format"]) {
      if (!f.is_string()) return WrongType("format", f, "a list of strings");
      a.format.push_back(f.get<std::string>());
    }
  }
  auto parsed = ParseClosedLoop(loop);
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat("AnimateDiff ", parsed.status().message()));
  a.closed_loop = *parsed;
  const std::string interp = absl::AsciiStrToUpper(a.interp);
  if (interp == "FILM") {
    return absl::UnimplementedError("AnimateDiff interp \"FILM\" is not available here; use \"RIFE\" (interp_x as the "
                                    "extension counts it)");
  }
  if (interp != "OFF" && interp != "RIFE") {
    return absl::InvalidArgumentError(absl::StrCat("AnimateDiff interp '", a.interp.substr(0, 16), "' is not Off or RIFE"));
  }
  if (a.freeinit_enable) {
    if (a.freeinit_filter != "butterworth" && a.freeinit_filter != "gaussian" && a.freeinit_filter != "box" &&
        a.freeinit_filter != "ideal") {
      return absl::InvalidArgumentError(absl::StrCat("AnimateDiff freeinit_filter '", a.freeinit_filter.substr(0, 32),
                                                     "' is not one of butterworth, gaussian, box, ideal"));
    }
    if (a.freeinit_iters < 1 || a.freeinit_iters > 10) {
      return absl::InvalidArgumentError(absl::StrCat("AnimateDiff freeinit_iters ", a.freeinit_iters,
                                                     " is outside 1..10"));
    }
    if (!(a.freeinit_ds >= 0 && a.freeinit_ds <= 1) || !(a.freeinit_dt >= 0 && a.freeinit_dt <= 1)) {
      return absl::InvalidArgumentError("AnimateDiff freeinit_ds and freeinit_dt must be in [0, 1]");
    }
  }
  for (const auto& [name, power, scale] : {std::tuple{"latent_power / latent_scale", a.latent_power, a.latent_scale},
                                            std::tuple{"latent_power_last / latent_scale_last", a.latent_power_last,
                                                       a.latent_scale_last}}) {
    if (!std::isfinite(power) || power < 0 || power > 100 || !std::isfinite(scale) || scale <= 0 || scale > 1e6) {
      return absl::InvalidArgumentError(absl::StrCat("AnimateDiff ", name, " (", power, ", ", scale,
                                                     ") must be a power in [0, 100] and a scale in (0, 1e6]"));
    }
  }
  return a;
}

absl::Status ResolveAnimateDiffArgs(AnimateDiffArgs& a, int max_context, int max_frames) {
  if (a.batch_size < 1 || a.batch_size > max_context) {
    return absl::InvalidArgumentError(absl::StrCat("AnimateDiff batch_size (context) ", a.batch_size,
                                                   " is outside 1..", max_context, " for this motion module"));
  }
  if (a.video_length < 0 || a.video_length > max_frames) {
    return absl::InvalidArgumentError(absl::StrCat("AnimateDiff video_length ", a.video_length, " is outside 0..",
                                                   max_frames, " (ATELIER_ANIMATEDIFF_MAX_FRAMES)"));
  }
  if (a.video_length == 0) a.video_length = a.batch_size;
  // A video shorter than the context is one window of its own frames (the extension's batch of `batch_size` frames
  // with misplaced uncond rows, its issue #213, is not reproduced).
  if (a.video_length < a.batch_size) a.batch_size = a.video_length;
  if (a.stride < 1 || a.stride > 8) {
    return absl::InvalidArgumentError(absl::StrCat("AnimateDiff stride ", a.stride, " is outside 1..8"));
  }
  if (a.overlap == -1) a.overlap = a.batch_size / 4;
  if (a.overlap < 0 || a.overlap >= a.batch_size) {
    return absl::InvalidArgumentError(absl::StrCat("AnimateDiff overlap ", a.overlap, " is outside 0..",
                                                   a.batch_size - 1, " (or -1: batch_size / 4)"));
  }
  if (!(a.fps > 0 && a.fps <= 240)) return absl::InvalidArgumentError(absl::StrCat("AnimateDiff fps ", a.fps, " is outside (0, 240]"));
  if (a.loop_number < 0) return absl::InvalidArgumentError("AnimateDiff loop_number must be 0 (forever) or more");
  if (absl::AsciiStrToUpper(a.interp) == "RIFE" && (a.interp_x < 2 || a.interp_x > 64)) {
    return absl::InvalidArgumentError(absl::StrCat("AnimateDiff interp_x ", a.interp_x, " is outside 2..64"));
  }
  return absl::OkStatus();
}

std::string AnimateDiffInfotext(const AnimateDiffArgs& a, const std::string& mm_hash, bool img2img) {
  std::vector<std::string> parts = {
      absl::StrCat("model: ", a.model),           absl::StrCat("video_length: ", a.video_length),
      absl::StrCat("fps: ", PyNumber(a.fps)),     absl::StrCat("loop_number: ", a.loop_number),
      absl::StrCat("closed_loop: ", ClosedLoopName(a.closed_loop)), absl::StrCat("batch_size: ", a.batch_size),
      absl::StrCat("stride: ", a.stride),         absl::StrCat("overlap: ", a.overlap),
      absl::StrCat("interp: ", a.interp),         absl::StrCat("interp_x: ", a.interp_x),
      absl::StrCat("freeinit_enable: ", a.freeinit_enable ? "True" : "False")};
  if (!a.request_id.empty()) parts.push_back(absl::StrCat("request_id: ", a.request_id));
  if (!mm_hash.empty()) parts.push_back(absl::StrCat("mm_hash: ", mm_hash));
  if (img2img) {
    parts.push_back(absl::StrCat("latent_power: ", PyNumber(a.latent_power)));
    parts.push_back(absl::StrCat("latent_scale: ", PyNumber(a.latent_scale)));
    parts.push_back(absl::StrCat("latent_power_last: ", PyNumber(a.latent_power_last)));
    parts.push_back(absl::StrCat("latent_scale_last: ", PyNumber(a.latent_scale_last)));
  }
  return absl::StrJoin(parts, ", ");
}

}  // namespace atelier::animatediff
