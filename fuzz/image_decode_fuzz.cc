// Fuzzes every image decoder the daemon accepts (PNG, JPEG, WebP, sniffed from the bytes) and the infotext readers
// (PNG text chunks, EXIF UserComment of JPEG/WebP): any bytes give an image, or a status, within the pixel limit.
#include <cstddef>
#include <cstdint>

#include "image/image_formats.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)atelier::engine::SniffImageFormat(bytes);
  auto image = atelier::engine::DecodeImage(bytes, /*max_pixels=*/1 << 20);
  if (image.ok() && static_cast<int64_t>(image->width) * image->height > (1 << 20)) __builtin_trap();
  (void)atelier::engine::DecodeImageRgb(bytes, 1 << 20);
  (void)atelier::engine::ReadInfotext(bytes);
  (void)atelier::engine::UserCommentFromExif(bytes);
  return 0;
}
