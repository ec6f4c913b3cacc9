#include "image/image_codec.h"

#include <png.h>

#include <csetjmp>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "util/utf8.h"

namespace atelier::engine {
namespace {

struct ErrorState {
  std::jmp_buf jump;
  std::string message;
};

void OnPngError(png_structp png, png_const_charp message) {
  auto* state = static_cast<ErrorState*>(png_get_error_ptr(png));
  state->message = message ? message : "libpng error";
  std::longjmp(state->jump, 1);
}
void OnPngWarning(png_structp, png_const_charp) {}

void WriteToString(png_structp png, png_bytep data, png_size_t length) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), length);
}
void FlushNothing(png_structp) {}

struct MemoryReader {
  absl::string_view bytes;
  std::size_t offset = 0;
};
void ReadFromMemory(png_structp png, png_bytep out, png_size_t length) {
  auto* reader = static_cast<MemoryReader*>(png_get_io_ptr(png));
  if (reader->bytes.size() - reader->offset < length) png_error(png, "PNG data ends early");
  std::memcpy(out, reader->bytes.data() + reader->offset, length);
  reader->offset += length;
}

}  // namespace

absl::StatusOr<std::string> EncodePng(const PixelImage& image, const std::vector<PngText>& text,
                                      int compression_level) {
  if (image.width <= 0 || image.height <= 0 ||
      (image.channels != 1 && image.channels != 3 && image.channels != 4) ||
      image.pixels.size() != static_cast<std::size_t>(image.width) * image.height * image.channels) {
    return absl::InvalidArgumentError(absl::StrCat("cannot encode a ", image.width, "x", image.height, "x",
                                                   image.channels, " image from ", image.pixels.size(), " bytes"));
  }
  ErrorState state;
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, OnPngError, OnPngWarning);
  if (png == nullptr) return absl::ResourceExhaustedError("libpng: out of memory");
  png_infop info = png_create_info_struct(png);
  // Everything libpng needs to free lives in png/info; the strings below outlive the longjmp target.
  std::vector<std::string> storage;
  std::vector<png_text> chunks;
  if (setjmp(state.jump)) {
    png_destroy_write_struct(&png, &info);
    return absl::InternalError(absl::StrCat("PNG encoding failed: ", state.message));
  }
  png_set_write_fn(png, &out, WriteToString, FlushNothing);
  const int color_type = image.channels == 1   ? PNG_COLOR_TYPE_GRAY
                         : image.channels == 3 ? PNG_COLOR_TYPE_RGB
                                               : PNG_COLOR_TYPE_RGB_ALPHA;
  png_set_IHDR(png, info, image.width, image.height, 8, color_type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, compression_level);

  storage.reserve(text.size() * 2);
  for (const PngText& t : text) {
    png_text chunk{};
    storage.push_back(t.key);
    chunk.key = storage.back().data();
    std::string latin1;
    if (Utf8ToLatin1(t.value, latin1)) {
      storage.push_back(std::move(latin1));
      chunk.compression = PNG_TEXT_COMPRESSION_NONE;
      chunk.text = storage.back().data();
      chunk.text_length = storage.back().size();
    } else {
      storage.push_back(t.value);
      chunk.compression = PNG_ITXT_COMPRESSION_NONE;
      chunk.text = storage.back().data();
      chunk.itxt_length = storage.back().size();
      chunk.lang = nullptr;
      chunk.lang_key = nullptr;
    }
    chunks.push_back(chunk);
  }
  if (!chunks.empty()) png_set_text(png, info, chunks.data(), static_cast<int>(chunks.size()));

  png_write_info(png, info);
  const std::size_t stride = static_cast<std::size_t>(image.width) * image.channels;
  for (int y = 0; y < image.height; ++y) {
    png_write_row(png, const_cast<png_bytep>(image.pixels.data() + y * stride));
  }
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return out;
}

absl::Status CheckDecodedSize(std::int64_t width, std::int64_t height, std::int64_t max_pixels) {
  if (width <= 0 || height <= 0 || width > max_pixels / height) {
    return absl::InvalidArgumentError(absl::StrCat("the image is ", width, "x", height, " pixels; at most ",
                                                   max_pixels / 1000000, " megapixels are accepted"));
  }
  return absl::OkStatus();
}

// Every chunk up to IEND must fit in the bytes given. libpng allocates (and clears) a chunk's declared length before
// it finds the data missing: a 250-byte file declaring a 4 GB chunk cost 4.6 GB and seconds per read (found by
// fuzz/image_decode_fuzz.cc).
absl::Status CheckPngChunks(absl::string_view bytes) {
  std::size_t at = 8;  // after the signature
  while (at + 8 <= bytes.size()) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + at);
    const std::uint64_t length = (std::uint64_t{p[0]} << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
    if (length > 0x7fffffffu || length + 12 > bytes.size() - at) {
      return absl::InvalidArgumentError(absl::StrCat("not a readable PNG: a chunk at byte ", at, " declares ", length,
                                                     " bytes, more than the file holds (truncated or corrupt)"));
    }
    if (std::memcmp(p + 4, "IEND", 4) == 0) return absl::OkStatus();
    at += 12 + length;
  }
  return absl::InvalidArgumentError("not a readable PNG: it ends before its IEND chunk (truncated)");
}

absl::StatusOr<PixelImage> DecodePng(absl::string_view bytes, std::int64_t max_pixels) {
  if (absl::Status st = CheckPngChunks(bytes); !st.ok()) return st;
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) {
    std::string message = image.message;
    png_image_free(&image);
    return absl::InvalidArgumentError(absl::StrCat("not a readable PNG: ", message));
  }
  if (absl::Status st = CheckDecodedSize(image.width, image.height, max_pixels); !st.ok()) {
    png_image_free(&image);
    return st;
  }
  const bool alpha = (image.format & PNG_FORMAT_FLAG_ALPHA) != 0;
  image.format = alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB;
  PixelImage out;
  out.width = static_cast<int>(image.width);
  out.height = static_cast<int>(image.height);
  out.channels = alpha ? 4 : 3;
  out.pixels.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.pixels.data(), 0, nullptr)) {
    std::string message = image.message;
    png_image_free(&image);
    return absl::InvalidArgumentError(absl::StrCat("not a readable PNG: ", message));
  }
  return out;
}

absl::StatusOr<std::vector<PngText>> ReadPngText(absl::string_view bytes) {
  if (bytes.size() < 8 || png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) != 0) {
    return absl::InvalidArgumentError("not a PNG file (bad signature)");
  }
  if (absl::Status st = CheckPngChunks(bytes); !st.ok()) return st;
  ErrorState state;
  MemoryReader reader{bytes, 0};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, OnPngError, OnPngWarning);
  if (png == nullptr) return absl::ResourceExhaustedError("libpng: out of memory");
  png_infop info = png_create_info_struct(png);
  png_infop end_info = png_create_info_struct(png);
  std::vector<PngText> out;
  if (setjmp(state.jump)) {
    png_destroy_read_struct(&png, &info, &end_info);
    return absl::InvalidArgumentError(absl::StrCat("not a readable PNG: ", state.message));
  }
  png_set_read_fn(png, &reader, ReadFromMemory);
  png_read_info(png, info);
  auto collect = [&](png_infop from) {
    png_textp chunks = nullptr;
    const int count = png_get_text(png, from, &chunks, nullptr);
    for (int i = 0; i < count; ++i) {
      const bool utf8 = chunks[i].compression == PNG_ITXT_COMPRESSION_NONE ||
                        chunks[i].compression == PNG_ITXT_COMPRESSION_zTXt;
      const std::size_t length = utf8 ? chunks[i].itxt_length : chunks[i].text_length;
      const absl::string_view value(chunks[i].text ? chunks[i].text : "", length);
      out.push_back({chunks[i].key, utf8 ? std::string(value) : Latin1ToUtf8(value)});
    }
  };
  collect(info);
  png_destroy_read_struct(&png, &info, &end_info);
  return out;
}

}  // namespace atelier::engine
