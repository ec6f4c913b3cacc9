// Fuzzes the .pth / .ckpt reader (a zip of a pickle and tensor data, read without executing anything), as ControlNet
// and motion module .pth files reach it: any bytes give a tensor index or a status.
#include <cstddef>
#include <cstdint>

#include "engine/io/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)atelier::engine::ReadTorchIndex(absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz.pth");
  return 0;
}
