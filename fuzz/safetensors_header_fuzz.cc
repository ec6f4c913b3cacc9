// Fuzzes the safetensors validator with arbitrary file contents: it must return a status, never crash, overflow
// or read out of bounds (AddressSanitizer and UBSan watch).
#include <cstddef>
#include <cstdint>

#include "engine/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto header = atelier::engine::ParseSafetensors(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  if (header.ok()) {
    // Every accepted tensor must lie inside the buffer.
    const uint64_t buffer = size - header->data_offset;
    for (const auto& t : header->tensors) {
      if (t.end > buffer || t.begin > t.end) __builtin_trap();
    }
  }
  return 0;
}
