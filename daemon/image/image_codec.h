// PNG encoding and decoding (libpng), with text chunks for WebUI's infotext.
#pragma once

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace atelier::engine {

// 8-bit interleaved pixels, row-major: [height][width][channels], channels 1 (gray), 3 (RGB) or 4 (RGBA).
struct PixelImage {
  int width = 0;
  int height = 0;
  int channels = 3;
  std::vector<std::uint8_t> pixels;
};

// A PNG text chunk. Written as tEXt when the value is Latin-1 representable, as iTXt (UTF-8) otherwise, as WebUI does.
struct PngText {
  std::string key;
  std::string value;  // UTF-8
};

absl::StatusOr<std::string> EncodePng(const PixelImage& image, const std::vector<PngText>& text = {},
                                      int compression_level = 6);

// Largest image a decoder accepts, in pixels (a few MB of compressed file can otherwise ask for GBs).
inline constexpr std::int64_t kMaxDecodedPixels = 8192LL * 8192;

// INVALID_ARGUMENT naming the size when width x height exceeds `max_pixels`.
absl::Status CheckDecodedSize(std::int64_t width, std::int64_t height, std::int64_t max_pixels);

// Decodes any PNG into 8-bit RGB (channels = 3) or RGBA (channels = 4, when the file has alpha).
absl::StatusOr<PixelImage> DecodePng(absl::string_view bytes, std::int64_t max_pixels = kMaxDecodedPixels);

// Text chunks (tEXt, zTXt, iTXt) of a PNG, values as UTF-8.
absl::StatusOr<std::vector<PngText>> ReadPngText(absl::string_view bytes);

}  // namespace atelier::engine
