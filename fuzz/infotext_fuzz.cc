// Fuzzes the infotext parser (WebUI's parse_generation_parameters): any text gives a parse, never a crash.
#include <cstddef>
#include <cstdint>

#include "engine/pipeline/infotext_parse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)atelier::engine::ParseInfotext(absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
