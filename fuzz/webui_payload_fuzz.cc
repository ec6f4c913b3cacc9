// Fuzzes the WebUI JSON payload conversion (`atelier txt2img --json`): any text gives a GenerateRequest or a status.
#include <cstddef>
#include <cstdint>
#include <string>

#include "webui_payload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto request = atelier::client::WebUiPayloadToRequest(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (request.ok()) (void)request->ByteSizeLong();
  return 0;
}
