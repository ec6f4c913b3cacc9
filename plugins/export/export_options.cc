#include "export_options.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace atelier::exporter {
namespace {

using nlohmann::json;

constexpr const char* kFormats[] = {"GIF", "MP4", "WEBM", "WEBP", "PNG", "TXT", "SHEET"};

std::string Shown(const json& v) {
  std::string s = v.dump();
  return s.size() > 64 ? s.substr(0, 64) + "..." : s;
}

absl::StatusOr<double> Number(const json& j, const char* key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) return absl::InvalidArgumentError(absl::StrCat("export: ", key, " must be a number, got ", Shown(j[key])));
  return j[key].get<double>();
}

absl::StatusOr<std::array<uint8_t, 3>> Colour(const json& j, const char* key, std::array<uint8_t, 3> fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  unsigned r = 0, g = 0, b = 0;
  const std::string s = j[key].is_string() ? j[key].get<std::string>() : "";
  if (s.size() != 7 || s[0] != '#' || std::sscanf(s.c_str() + 1, "%2x%2x%2x", &r, &g, &b) != 3) {
    return absl::InvalidArgumentError(absl::StrCat("export: ", key, " must be a colour \"#rrggbb\", got ", Shown(j[key])));
  }
  return std::array<uint8_t, 3>{static_cast<uint8_t>(r), static_cast<uint8_t>(g), static_cast<uint8_t>(b)};
}

absl::StatusOr<bool> Flag(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (j[key].is_boolean()) return j[key].get<bool>();
  if (j[key].is_number()) return j[key].get<double>() != 0;  // 0 / 1 as WebUI's API clients send them
  return absl::InvalidArgumentError(absl::StrCat("export: ", key, " must be true or false, got ", Shown(j[key])));
}

// A whole number in [lo, hi] for a sheet setting (no undefined behaviour casting huge values).
absl::StatusOr<int> Bounded(const json& j, const char* key, double fallback, int lo, int hi) {
  auto v = Number(j, key, fallback);
  if (!v.ok()) return v.status();
  if (!(*v >= lo && *v <= hi)) return absl::InvalidArgumentError(absl::StrCat("export: ", key, " must be ", lo, "..", hi));
  return static_cast<int>(*v);
}

}  // namespace

const char* FormatList() { return "GIF, MP4, WEBM, WEBP, PNG, TXT, SHEET"; }

absl::StatusOr<ExportOptions> ParseExportOptions(const json& j) {
  ExportOptions o;
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat("export: the arguments must be an object, got ", Shown(j)));
  auto enable = Flag(j, "enable", false);
  if (!enable.ok()) return enable.status();
  auto enabled = Flag(j, "enabled", *enable);
  if (!enabled.ok()) return enabled.status();
  o.enabled = *enabled;
  // "formats", or AnimateDiff's "format"; default as sd-webui-animatediff's animatediff_default_save_formats.
  json formats = j.contains("formats") ? j["formats"] : j.contains("format") ? j["format"] : json::array({"GIF", "PNG"});
  if (formats.is_string()) formats = json::array({formats});
  if (!formats.is_array()) return absl::InvalidArgumentError("export: formats must be a list, e.g. [\"GIF\", \"SHEET\"]");
  std::vector<std::string> wanted;
  for (const auto& f : formats) {
    std::string name = f.is_string() ? absl::AsciiStrToUpper(f.get<std::string>()) : "";
    if (name == "FRAME") continue;  // AnimateDiff's "return the frames": they are the job's results anyway
    if (name == "CONTACT_SHEET" || name == "CONTACT SHEET" || name == "GRID") name = "SHEET";
    if (std::find(std::begin(kFormats), std::end(kFormats), name) == std::end(kFormats)) {
      return absl::InvalidArgumentError(absl::StrCat("export: unknown format ", Shown(f), "; formats: ", FormatList()));
    }
    wanted.push_back(name);
  }
  for (const char* f : kFormats) {
    if (std::find(wanted.begin(), wanted.end(), f) != wanted.end()) o.formats.push_back(f);
  }
  auto fps = Number(j, "fps", 8);
  if (!fps.ok()) return fps.status();
  if (!(*fps > 0 && *fps <= 240)) return absl::InvalidArgumentError(absl::StrCat("export: fps must be in (0, 240], got ", *fps));
  o.fps = *fps;
  auto loop = Number(j, "loop_number", Number(j, "loop", 0).value_or(0));
  if (!loop.ok()) return loop.status();
  if (*loop < 0 || *loop > 65535) return absl::InvalidArgumentError("export: loop_number must be 0 (forever) to 65535");
  o.loop = static_cast<int>(*loop);
  if (j.contains("gif_dither") && j["gif_dither"].is_string()) o.dither = j["gif_dither"].get<std::string>();
  static const char* kDithers[] = {"bayer", "heckbert", "floyd_steinberg", "sierra2", "sierra2_4a", "none"};
  if (std::find(std::begin(kDithers), std::end(kDithers), o.dither) == std::end(kDithers)) {
    return absl::InvalidArgumentError(absl::StrCat("export: gif_dither '", o.dither.substr(0, 32),
                                                   "' is not one of bayer, heckbert, floyd_steinberg, sierra2, "
                                                   "sierra2_4a, none"));
  }
  auto crf = Number(j, "crf", 23);
  if (!crf.ok()) return crf.status();
  if (*crf < 0 || *crf > 51) return absl::InvalidArgumentError("export: crf must be 0..51");
  o.crf = static_cast<int>(*crf);
  auto webm_crf = Number(j, "webm_crf", 32);
  if (!webm_crf.ok()) return webm_crf.status();
  if (*webm_crf < 0 || *webm_crf > 63) return absl::InvalidArgumentError("export: webm_crf must be 0..63");
  o.webm_crf = static_cast<int>(*webm_crf);
  auto quality = Number(j, "webp_quality", 80);
  if (!quality.ok()) return quality.status();
  if (*quality < 0 || *quality > 100) return absl::InvalidArgumentError("export: webp_quality must be 0..100");
  o.webp_quality = static_cast<float>(*quality);
  auto lossless = Flag(j, "webp_lossless", false);
  if (!lossless.ok()) return lossless.status();
  o.webp_lossless = *lossless;
  if (j.contains("request_id") && j["request_id"].is_string()) {
    o.request_id = j["request_id"].get<std::string>();
    for (char c : o.request_id) {
      if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') || o.request_id.size() > 64) {
        return absl::InvalidArgumentError("export: request_id may hold up to 64 letters, digits, '-' and '_'");
      }
    }
  }
  const json sheet = j.contains("sheet") && j["sheet"].is_object() ? j["sheet"] : json::object();
  auto columns = Bounded(sheet, "columns", 0, 0, 256);
  auto cell = Bounded(sheet, "cell_size", 256, 8, 4096);
  auto spacing = Bounded(sheet, "spacing", 8, 0, 512);
  auto font = Bounded(sheet, "font_size", 14, 4, 256);
  for (const auto* v : {&columns, &cell, &spacing, &font}) {
    if (!v->ok()) return v->status();
  }
  o.sheet.columns = *columns;
  o.sheet.cell = *cell;
  o.sheet.spacing = *spacing;
  o.sheet.font_px = *font;
  if (sheet.contains("label") && sheet["label"].is_string()) o.sheet.label = sheet["label"].get<std::string>();
  auto bg = Colour(sheet, "background", o.sheet.background);
  if (!bg.ok()) return bg.status();
  o.sheet.background = *bg;
  auto fg = Colour(sheet, "text_color", o.sheet.text);
  if (!fg.ok()) return fg.status();
  o.sheet.text = *fg;
  auto header = Flag(sheet, "header", true);
  if (!header.ok()) return header.status();
  o.sheet.header = *header ? "\x01" : "";  // the job fills in the prompt and settings
  return o;
}

}  // namespace atelier::exporter
