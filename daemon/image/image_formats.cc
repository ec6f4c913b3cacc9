#include "image/image_formats.h"

#include <cstdio>
#include <jpeglib.h>
#include <unicode/ustring.h>
#include <webp/decode.h>
#include <webp/demux.h>
#include <webp/encode.h>
#include <webp/mux.h>

#include <nlohmann/json.hpp>

#include <csetjmp>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace atelier::engine {
namespace {

constexpr char kUnicodePrefix[] = {'U', 'N', 'I', 'C', 'O', 'D', 'E', '\0'};
constexpr char kExifJpegPrefix[] = {'E', 'x', 'i', 'f', '\0', '\0'};

absl::Status Corrupt(const char* format, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("cannot decode the ", format, " image: ", why));
}

// ---- UTF-8 <-> UTF-16 (ICU) ----
std::u16string Utf16(absl::string_view utf8) {
  UErrorCode error = U_ZERO_ERROR;
  int32_t length = 0;
  u_strFromUTF8WithSub(nullptr, 0, &length, utf8.data(), static_cast<int32_t>(utf8.size()), 0xFFFD, nullptr, &error);
  std::u16string out(static_cast<size_t>(length), u'\0');
  error = U_ZERO_ERROR;
  u_strFromUTF8WithSub(reinterpret_cast<UChar*>(out.data()), length, nullptr, utf8.data(),
                       static_cast<int32_t>(utf8.size()), 0xFFFD, nullptr, &error);
  return U_SUCCESS(error) ? out : std::u16string();
}

std::string Utf8(const std::u16string& utf16) {
  UErrorCode error = U_ZERO_ERROR;
  int32_t length = 0;
  const auto* src = reinterpret_cast<const UChar*>(utf16.data());
  u_strToUTF8WithSub(nullptr, 0, &length, src, static_cast<int32_t>(utf16.size()), 0xFFFD, nullptr, &error);
  std::string out(static_cast<size_t>(length), '\0');
  error = U_ZERO_ERROR;
  u_strToUTF8WithSub(out.data(), length, nullptr, src, static_cast<int32_t>(utf16.size()), 0xFFFD, nullptr, &error);
  return U_SUCCESS(error) ? out : std::string();
}

// ---- EXIF (TIFF) byte access ----
struct Tiff {
  absl::string_view bytes;
  bool big_endian = true;
  bool Has(size_t offset, size_t n) const { return offset <= bytes.size() && n <= bytes.size() - offset; }
  uint32_t U16(size_t o) const {
    const auto* b = reinterpret_cast<const unsigned char*>(bytes.data()) + o;
    return big_endian ? (b[0] << 8 | b[1]) : (b[1] << 8 | b[0]);
  }
  uint32_t U32(size_t o) const {
    return big_endian ? (U16(o) << 16 | U16(o + 2)) : (U16(o + 2) << 16 | U16(o));
  }
  // The (type, count, value-or-offset position) of `tag` in the IFD at `ifd`.
  std::optional<size_t> FindEntry(size_t ifd, uint32_t tag) const {
    if (!Has(ifd, 2)) return std::nullopt;
    const uint32_t n = U16(ifd);
    for (uint32_t i = 0; i < n; ++i) {
      const size_t entry = ifd + 2 + 12 * static_cast<size_t>(i);
      if (!Has(entry, 12)) return std::nullopt;
      if (U16(entry) == tag) return entry;
    }
    return std::nullopt;
  }
};

void PutU16(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xFF));
}
void PutU32(std::string& out, uint32_t v) {
  PutU16(out, v >> 16);
  PutU16(out, v & 0xFFFF);
}

// ---- JPEG (libjpeg-turbo), errors through longjmp ----
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
};
void OnJpegError(j_common_ptr cinfo) {
  auto* error = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, error->message);
  std::longjmp(error->jump, 1);
}

absl::StatusOr<std::string> EncodeJpeg(const PixelImage& image, int quality, const std::string& exif) {
  // Everything with a destructor is made before setjmp: a libjpeg error longjmps back here.
  const std::string app1 = exif.empty() ? std::string() : std::string(kExifJpegPrefix, sizeof(kExifJpegPrefix)) + exif;
  if (app1.size() > 65533) {
    return absl::InvalidArgumentError("the infotext is too long for a JPEG EXIF block (64 KiB); use PNG");
  }
  jpeg_compress_struct cinfo;
  JpegError error;
  cinfo.err = jpeg_std_error(&error.mgr);
  error.mgr.error_exit = OnJpegError;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  if (setjmp(error.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(buffer);
    return absl::InternalError(absl::StrCat("libjpeg: ", error.message));
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(image.width);
  cinfo.image_height = static_cast<JDIMENSION>(image.height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  if (!app1.empty()) {
    jpeg_write_marker(&cinfo, JPEG_APP0 + 1, reinterpret_cast<const JOCTET*>(app1.data()),
                      static_cast<unsigned int>(app1.size()));
  }
  const size_t stride = static_cast<size_t>(image.width) * 3;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(image.pixels.data() + cinfo.next_scanline * stride);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  std::free(buffer);
  return out;
}

// Decodes a JPEG to RGB; `exif` (may be null) receives the EXIF block of its APP1 marker. Without `pixels` only
// the header is read (the image comes back empty).
absl::StatusOr<PixelImage> DecodeJpeg(absl::string_view bytes, std::string* exif, int64_t max_pixels,
                                      bool pixels = true) {
  jpeg_decompress_struct cinfo;
  JpegError error;
  cinfo.err = jpeg_std_error(&error.mgr);
  error.mgr.error_exit = OnJpegError;
  error.mgr.output_message = [](j_common_ptr) {};
  PixelImage image;
  if (setjmp(error.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return Corrupt("JPEG", error.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  if (exif != nullptr) {
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != nullptr; m = m->next) {
      const absl::string_view data(reinterpret_cast<const char*>(m->data), m->data_length);
      if (m->marker == JPEG_APP0 + 1 && absl::StartsWith(data, absl::string_view(kExifJpegPrefix, 6))) {
        *exif = std::string(data.substr(6));
        break;
      }
    }
  }
  if (!pixels) {
    jpeg_destroy_decompress(&cinfo);
    return image;
  }
  if (absl::Status st = CheckDecodedSize(cinfo.image_width, cinfo.image_height, max_pixels); !st.ok()) {
    jpeg_destroy_decompress(&cinfo);
    return st;
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  image.width = static_cast<int>(cinfo.output_width);
  image.height = static_cast<int>(cinfo.output_height);
  image.channels = 3;
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = image.pixels.data() + static_cast<size_t>(cinfo.output_scanline) * image.width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return image;
}

// ---- WebP (libwebp, libwebpmux, libwebpdemux) ----
absl::StatusOr<std::string> EncodeWebp(const PixelImage& image, int quality, const std::string& exif) {
  uint8_t* encoded = nullptr;
  const size_t size = WebPEncodeRGB(image.pixels.data(), image.width, image.height, image.width * 3,
                                    static_cast<float>(quality), &encoded);
  if (size == 0) return absl::InternalError("libwebp could not encode the image");
  std::unique_ptr<uint8_t, void (*)(void*)> owned(encoded, WebPFree);
  if (exif.empty()) return std::string(reinterpret_cast<const char*>(encoded), size);
  WebPData plain{encoded, size};
  std::unique_ptr<WebPMux, void (*)(WebPMux*)> mux(WebPMuxCreate(&plain, 1), WebPMuxDelete);
  if (mux == nullptr) return absl::InternalError("libwebpmux could not read the encoded image");
  WebPData chunk{reinterpret_cast<const uint8_t*>(exif.data()), exif.size()};
  if (WebPMuxSetChunk(mux.get(), "EXIF", &chunk, 1) != WEBP_MUX_OK) {
    return absl::InternalError("libwebpmux could not add the EXIF chunk");
  }
  WebPData assembled;
  WebPDataInit(&assembled);
  if (WebPMuxAssemble(mux.get(), &assembled) != WEBP_MUX_OK) return absl::InternalError("libwebpmux failed");
  std::string out(reinterpret_cast<const char*>(assembled.bytes), assembled.size);
  WebPDataClear(&assembled);
  return out;
}

std::optional<std::string> WebpExif(absl::string_view bytes) {
  WebPData data{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
  std::unique_ptr<WebPDemuxer, void (*)(WebPDemuxer*)> demux(WebPDemux(&data), WebPDemuxDelete);
  if (demux == nullptr) return std::nullopt;
  WebPChunkIterator it;
  if (!WebPDemuxGetChunk(demux.get(), "EXIF", 1, &it)) return std::nullopt;
  std::string exif(reinterpret_cast<const char*>(it.chunk.bytes), it.chunk.size);
  WebPDemuxReleaseChunkIterator(&it);
  // Some writers keep JPEG's prefix inside the chunk.
  if (absl::StartsWith(exif, absl::string_view(kExifJpegPrefix, 6))) exif.erase(0, 6);
  return exif;
}

absl::StatusOr<PixelImage> DecodeWebp(absl::string_view bytes, int64_t max_pixels) {
  WebPBitstreamFeatures features;
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  if (WebPGetFeatures(data, bytes.size(), &features) != VP8_STATUS_OK) return Corrupt("WebP", "bad header");
  if (absl::Status st = CheckDecodedSize(features.width, features.height, max_pixels); !st.ok()) return st;
  PixelImage image;
  image.channels = features.has_alpha ? 4 : 3;
  uint8_t* pixels = features.has_alpha ? WebPDecodeRGBA(data, bytes.size(), &image.width, &image.height)
                                       : WebPDecodeRGB(data, bytes.size(), &image.width, &image.height);
  if (pixels == nullptr) return Corrupt("WebP", "the bitstream is damaged");
  image.pixels.assign(pixels, pixels + static_cast<size_t>(image.width) * image.height * image.channels);
  WebPFree(pixels);
  return image;
}

// RGBA/grey -> RGB, transparency flattened onto white.
PixelImage ToRgb(PixelImage image) {
  if (image.channels == 3) return image;
  PixelImage out;
  out.width = image.width;
  out.height = image.height;
  out.channels = 3;
  const size_t n = static_cast<size_t>(image.width) * image.height;
  out.pixels.resize(n * 3);
  for (size_t i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c) {
      if (image.channels == 1) {
        out.pixels[i * 3 + c] = image.pixels[i];
      } else {
        const int alpha = image.pixels[i * 4 + 3];
        const int value = image.pixels[i * 4 + c] * alpha + 255 * (255 - alpha);
        out.pixels[i * 3 + c] = static_cast<uint8_t>((value + 127) / 255);
      }
    }
  }
  return out;
}

// WebUI's reading of NovelAI PNGs (images.read_info_from_image): Description is the prompt, the Comment JSON has
// the negative prompt (uc), steps, sampler, scale and seed; Clip skip 2 and ENSD 31337 are NovelAI's settings.
std::string NovelAiInfotext(const std::map<std::string, std::string>& text, absl::string_view png) {
  const auto comment = text.find("Comment");
  if (comment == text.end()) return "";
  const nlohmann::json info = nlohmann::json::parse(comment->second, nullptr, /*allow_exceptions=*/false);
  if (!info.is_object()) return "";
  static const std::map<std::string, std::string> kSamplers = {
      {"k_euler_ancestral", "Euler a"}, {"k_euler", "Euler"},        {"k_lms", "LMS"},
      {"k_heun", "Heun"},               {"k_dpm_2", "DPM2"},         {"k_dpm_2_ancestral", "DPM2 a"},
      {"k_dpmpp_2s_ancestral", "DPM++ 2S a"}, {"k_dpmpp_2m", "DPM++ 2M"}, {"k_dpmpp_sde", "DPM++ SDE"},
      {"k_dpm_fast", "DPM fast"},       {"k_dpm_ad", "DPM adaptive"}, {"ddim", "DDIM"},
      {"plms", "PLMS"}};
  auto value = [&info](const char* key) -> std::string {
    if (!info.contains(key)) return "";
    const auto& v = info[key];
    return v.is_string() ? v.get<std::string>() : v.dump();
  };
  const auto sampler = kSamplers.find(value("sampler"));
  const auto decoded = DecodePng(png);
  const std::string size = decoded.ok() ? absl::StrCat(decoded->width, "x", decoded->height) : "0x0";
  const auto description = text.find("Description");
  return absl::StrCat(description == text.end() ? "" : description->second, "\nNegative prompt: ", value("uc"),
                      "\nSteps: ", value("steps"),
                      ", Sampler: ", sampler == kSamplers.end() ? "Euler a" : sampler->second,
                      ", CFG scale: ", value("scale"), ", Seed: ", value("seed"), ", Size: ", size,
                      ", Clip skip: 2, ENSD: 31337");
}

}  // namespace

const char* ImageMimeType(ImageFileFormat format) {
  switch (format) {
    case ImageFileFormat::kJpeg: return "image/jpeg";
    case ImageFileFormat::kWebp: return "image/webp";
    case ImageFileFormat::kPng: break;
  }
  return "image/png";
}

const char* ImageExtension(ImageFileFormat format) {
  switch (format) {
    case ImageFileFormat::kJpeg: return "jpg";
    case ImageFileFormat::kWebp: return "webp";
    case ImageFileFormat::kPng: break;
  }
  return "png";
}

std::optional<ImageFileFormat> SniffImageFormat(absl::string_view b) {
  if (absl::StartsWith(b, "\x89PNG\r\n\x1a\n")) return ImageFileFormat::kPng;
  if (b.size() >= 3 && b[0] == '\xFF' && b[1] == '\xD8' && b[2] == '\xFF') return ImageFileFormat::kJpeg;
  if (b.size() >= 12 && b.substr(0, 4) == "RIFF" && b.substr(8, 4) == "WEBP") return ImageFileFormat::kWebp;
  return std::nullopt;
}

absl::StatusOr<PixelImage> DecodeImageRgb(absl::string_view bytes, int64_t max_pixels) {
  auto image = DecodeImage(bytes, max_pixels);
  if (!image.ok()) return image.status();
  return ToRgb(*std::move(image));
}

absl::StatusOr<PixelImage> DecodeImage(absl::string_view bytes, int64_t max_pixels) {
  const auto format = SniffImageFormat(bytes);
  if (!format) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a PNG, JPEG or WebP image (", bytes.size(), " bytes; base64 must be decoded first)"));
  }
  absl::StatusOr<PixelImage> image;
  switch (*format) {
    case ImageFileFormat::kPng:
      image = DecodePng(bytes, max_pixels);
      if (!image.ok() && absl::StrContains(image.status().message(), "megapixels")) return image.status();
      if (!image.ok()) return Corrupt("PNG", std::string(image.status().message()));
      break;
    case ImageFileFormat::kJpeg: image = DecodeJpeg(bytes, nullptr, max_pixels); break;
    case ImageFileFormat::kWebp: image = DecodeWebp(bytes, max_pixels); break;
  }
  if (!image.ok()) return image.status();
  if (image->channels == 1) return ToRgb(*std::move(image));
  return image;
}

absl::StatusOr<std::string> EncodeImage(const PixelImage& image, const ImageEncodeOptions& options) {
  if (image.channels != 3 || image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return absl::InvalidArgumentError(absl::StrCat("cannot encode a ", image.width, "x", image.height, "x",
                                                   image.channels, " image: 8-bit RGB expected"));
  }
  if (options.quality < 1 || options.quality > 100) {
    return absl::InvalidArgumentError(absl::StrCat("image quality ", options.quality, " is outside [1, 100]"));
  }
  switch (options.format) {
    case ImageFileFormat::kPng: {
      std::vector<PngText> text;
      if (!options.infotext.empty()) text.push_back({"parameters", options.infotext});
      return EncodePng(image, text);
    }
    case ImageFileFormat::kJpeg:
      return EncodeJpeg(image, options.quality, options.infotext.empty() ? "" : ExifWithUserComment(options.infotext));
    case ImageFileFormat::kWebp:
      return EncodeWebp(image, options.quality, options.infotext.empty() ? "" : ExifWithUserComment(options.infotext));
  }
  return absl::InvalidArgumentError("unknown image format");
}

absl::StatusOr<std::string> ReadInfotext(absl::string_view bytes) {
  const auto format = SniffImageFormat(bytes);
  if (!format) return absl::InvalidArgumentError("not a PNG, JPEG or WebP image");
  std::optional<std::string> comment;
  switch (*format) {
    case ImageFileFormat::kPng: {
      auto chunks = ReadPngText(bytes);
      if (!chunks.ok()) return Corrupt("PNG", std::string(chunks.status().message()));
      std::map<std::string, std::string> text;
      for (const PngText& chunk : *chunks) text.emplace(chunk.key, chunk.value);
      if (text.count("parameters") > 0) return text["parameters"];
      if (text["Software"] == "NovelAI") return NovelAiInfotext(text, bytes);
      return std::string();
    }
    case ImageFileFormat::kJpeg: {
      std::string exif;
      auto image = DecodeJpeg(bytes, &exif, kMaxDecodedPixels, /*pixels=*/false);
      if (!image.ok()) return image.status();
      comment = UserCommentFromExif(exif);
      break;
    }
    case ImageFileFormat::kWebp: {
      if (WebPGetInfo(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), nullptr, nullptr) == 0) {
        return Corrupt("WebP", "bad header");
      }
      if (auto exif = WebpExif(bytes)) comment = UserCommentFromExif(*exif);
      break;
    }
  }
  return comment.value_or("");
}

std::string ExifWithUserComment(absl::string_view utf8) {
  std::string comment(kUnicodePrefix, sizeof(kUnicodePrefix));
  for (const char16_t unit : Utf16(utf8)) PutU16(comment, unit);
  std::string out = "MM";
  PutU16(out, 42);
  PutU32(out, 8);  // IFD0
  // IFD0: one entry, the pointer to the Exif IFD.
  constexpr uint32_t kExifIfd = 8 + 2 + 12 + 4;
  PutU16(out, 1);
  PutU16(out, 0x8769);
  PutU16(out, 4);  // LONG
  PutU32(out, 1);
  PutU32(out, kExifIfd);
  PutU32(out, 0);  // no next IFD
  // Exif IFD: UserComment (UNDEFINED bytes) stored after it.
  constexpr uint32_t kData = kExifIfd + 2 + 12 + 4;
  PutU16(out, 1);
  PutU16(out, 0x9286);
  PutU16(out, 7);  // UNDEFINED
  PutU32(out, static_cast<uint32_t>(comment.size()));
  PutU32(out, kData);
  PutU32(out, 0);
  out += comment;
  return out;
}

std::optional<std::string> UserCommentFromExif(absl::string_view bytes) {
  Tiff tiff{bytes};
  if (!tiff.Has(0, 8)) return std::nullopt;
  if (bytes.substr(0, 2) == "II") {
    tiff.big_endian = false;
  } else if (bytes.substr(0, 2) != "MM") {
    return std::nullopt;
  }
  if (tiff.U16(2) != 42) return std::nullopt;
  const auto pointer = tiff.FindEntry(tiff.U32(4), 0x8769);
  if (!pointer) return std::nullopt;
  const auto entry = tiff.FindEntry(tiff.U32(*pointer + 8), 0x9286);
  if (!entry) return std::nullopt;
  const uint32_t count = tiff.U32(*entry + 4);
  const size_t offset = count <= 4 ? *entry + 8 : tiff.U32(*entry + 8);
  if (count < 8 || !tiff.Has(offset, count)) return std::nullopt;
  const absl::string_view prefix = bytes.substr(offset, 8);
  const absl::string_view body = bytes.substr(offset + 8, count - 8);
  if (prefix == absl::string_view(kUnicodePrefix, 8)) {
    std::u16string units;
    for (size_t i = 0; i + 1 < body.size(); i += 2) {
      const auto hi = static_cast<unsigned char>(body[i]), lo = static_cast<unsigned char>(body[i + 1]);
      units.push_back(static_cast<char16_t>(hi << 8 | lo));
    }
    return Utf8(units);
  }
  std::string text(body);
  while (!text.empty() && text.back() == '\0') text.pop_back();
  return text;
}

}  // namespace atelier::engine
