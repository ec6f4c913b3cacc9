// What the export plugin makes for a job, from its alwayson_scripts value (or what another plugin feeds it, e.g.
// AnimateDiff's format list and fps): formats as sd-webui-animatediff names them (GIF, MP4, WEBM, WEBP, PNG, TXT)
// plus SHEET (a contact sheet), fps, loop count, GIF dither, qualities and the contact sheet's layout.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "contact_sheet.h"

namespace atelier::exporter {

struct ExportOptions {
  bool enabled = false;
  std::vector<std::string> formats;  // upper-case, in a fixed order, no duplicates
  double fps = 8;
  int loop = 0;
  std::string dither = "sierra2_4a";
  int crf = 23;          // MP4
  int webm_crf = 32;     // WebM (VP9's scale)
  float webp_quality = 80;
  bool webp_lossless = false;
  SheetOptions sheet;
  std::string request_id;  // appended to file names, as the extension does
};

// The formats this plugin writes, for messages.
const char* FormatList();

// INVALID_ARGUMENT naming the field for an unknown format (listing them), fps <= 0 or > 240, a loop count < 0, a
// quality out of range, a bad sheet layout or colour.
absl::StatusOr<ExportOptions> ParseExportOptions(const nlohmann::json& unit);

}  // namespace atelier::exporter
