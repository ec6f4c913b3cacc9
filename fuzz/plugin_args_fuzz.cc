// Fuzzes the plugins' argument parsers with any JSON value: ControlNet units (and their infotext), AnimateDiff
// arguments, the export plugin's options and RIFE's. Each gives its settings or a status, never an exception or UB.
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "animatediff_args.h"
#include "control_unit.h"
#include "export_options.h"
#include "rife_options.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)atelier::controlnet::ParseUnitInfotext(text);
  const nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return 0;
  (void)atelier::controlnet::ParseUnit(value, 0);
  (void)atelier::animatediff::ParseAnimateDiffArgs(value);
  (void)atelier::exporter::ParseExportOptions(value);
  (void)atelier::rife::ParseOptions(value, 16);
  return 0;
}
