// Image files in the formats WebUI saves and accepts: PNG (infotext in a `parameters` text chunk), JPEG and WebP
// (infotext in the EXIF UserComment, as WebUI writes it with piexif: "UNICODE\0" + UTF-16BE). libpng,
// libjpeg-turbo and libwebp do the coding; this file chooses, sniffs and carries the infotext.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "image/image_codec.h"

namespace atelier::engine {

enum class ImageFileFormat { kPng, kJpeg, kWebp };

// "image/png", "image/jpeg", "image/webp".
const char* ImageMimeType(ImageFileFormat format);
// "png", "jpg", "webp".
const char* ImageExtension(ImageFileFormat format);
// The format by the file's magic bytes; nullopt for anything else.
std::optional<ImageFileFormat> SniffImageFormat(absl::string_view bytes);

// Decodes a PNG, JPEG or WebP file to 8-bit RGB: transparency is flattened onto white (WebUI's img2img
// background colour), grey is expanded. INVALID_ARGUMENT naming the problem for anything else or a corrupt file.
// Images above `max_pixels` are refused before any pixel memory is allocated.
absl::StatusOr<PixelImage> DecodeImageRgb(absl::string_view bytes, int64_t max_pixels = kMaxDecodedPixels);

// The same, keeping transparency: RGB (channels 3) or RGBA (channels 4, PNG/WebP with alpha).
absl::StatusOr<PixelImage> DecodeImage(absl::string_view bytes, int64_t max_pixels = kMaxDecodedPixels);

struct ImageEncodeOptions {
  ImageFileFormat format = ImageFileFormat::kPng;
  int quality = 95;      // JPEG / WebP, 1..100
  std::string infotext;  // empty: none written
};
// Encodes 8-bit RGB (channels 3) with the infotext where WebUI puts it.
absl::StatusOr<std::string> EncodeImage(const PixelImage& image, const ImageEncodeOptions& options);

// The infotext of an image file: PNG `parameters` chunk, else the EXIF UserComment of a JPEG or WebP; empty when
// the file has none. INVALID_ARGUMENT when the bytes are not a readable PNG/JPEG/WebP.
absl::StatusOr<std::string> ReadInfotext(absl::string_view bytes);

// An EXIF block (TIFF structure, big-endian, without JPEG's "Exif\0\0" prefix) holding only UserComment =
// "UNICODE\0" + UTF-16BE of `utf8`, as piexif.helper.UserComment.dump(..., encoding="unicode") makes it.
std::string ExifWithUserComment(absl::string_view utf8);
// The UserComment of an EXIF block (either byte order; UNICODE (UTF-16BE), ASCII and undefined prefixes) as
// UTF-8; nullopt when there is none or the block is malformed.
std::optional<std::string> UserCommentFromExif(absl::string_view tiff);

}  // namespace atelier::engine
