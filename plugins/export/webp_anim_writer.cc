#include "webp_anim_writer.h"

#include <cmath>
#include <vector>

#include <webp/encode.h>
#include <webp/mux.h>

#include "absl/strings/str_cat.h"

namespace atelier::exporter {
namespace {

WebPAnimEncoder* Enc(void* p) { return static_cast<WebPAnimEncoder*>(p); }

int TimestampMs(int frame, double fps) { return static_cast<int>(std::lround(frame * 1000.0 / fps)); }

void Put16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xFF));
  s.push_back(static_cast<char>(v >> 8));
}
void Put32(std::string& s, uint32_t v) {
  Put16(s, static_cast<uint16_t>(v & 0xFFFF));
  Put16(s, static_cast<uint16_t>(v >> 16));
}

// UTF-8 -> UTF-16 big-endian bytes.
std::string Utf16Be(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    uint32_t cp = c;
    int extra = 0;
    if (c >= 0xF0) cp = c & 0x07, extra = 3;
    else if (c >= 0xE0) cp = c & 0x0F, extra = 2;
    else if (c >= 0xC0) cp = c & 0x1F, extra = 1;
    ++i;
    for (int k = 0; k < extra && i < text.size(); ++k, ++i) cp = (cp << 6) | (static_cast<unsigned char>(text[i]) & 0x3F);
    auto unit = [&out](uint32_t u) {
      out.push_back(static_cast<char>((u >> 8) & 0xFF));
      out.push_back(static_cast<char>(u & 0xFF));
    };
    if (cp >= 0x10000) {
      cp -= 0x10000;
      unit(0xD800 + (cp >> 10));
      unit(0xDC00 + (cp & 0x3FF));
    } else {
      unit(cp);
    }
  }
  return out;
}

}  // namespace

std::string ExifUserComment(const std::string& text) {
  const std::string value = std::string("UNICODE\0", 8) + Utf16Be(text);
  std::string s = "II";
  Put16(s, 42);
  Put32(s, 8);  // IFD0 at 8
  // IFD0: one entry, ExifIFDPointer (0x8769, LONG) -> 26.
  Put16(s, 1);
  Put16(s, 0x8769);
  Put16(s, 4);
  Put32(s, 1);
  Put32(s, 26);
  Put32(s, 0);  // no next IFD
  // Exif IFD at 26: one entry, UserComment (0x9286, UNDEFINED) -> 44.
  Put16(s, 1);
  Put16(s, 0x9286);
  Put16(s, 7);
  Put32(s, static_cast<uint32_t>(value.size()));
  Put32(s, 44);
  Put32(s, 0);
  s += value;
  return s;
}

absl::StatusOr<std::unique_ptr<WebpAnimWriter>> WebpAnimWriter::Open(const WebpOptions& options) {
  if (options.width <= 0 || options.height <= 0 || options.width > 16383 || options.height > 16383) {
    return absl::InvalidArgumentError("webp: frame size outside 1..16383");
  }
  WebPAnimEncoderOptions anim;
  if (!WebPAnimEncoderOptionsInit(&anim)) return absl::InternalError("webp: library version mismatch");
  anim.anim_params.loop_count = options.loop;
  std::unique_ptr<WebpAnimWriter> w(new WebpAnimWriter());
  w->options_ = options;
  w->encoder_ = WebPAnimEncoderNew(options.width, options.height, &anim);
  if (w->encoder_ == nullptr) return absl::ResourceExhaustedError("webp: cannot create the animation encoder");
  return w;
}

WebpAnimWriter::~WebpAnimWriter() {
  if (encoder_ != nullptr) WebPAnimEncoderDelete(Enc(encoder_));
}

absl::Status WebpAnimWriter::AddFrame(const std::uint8_t* rgb, int width, int height) {
  if (width != options_.width || height != options_.height) {
    return absl::InvalidArgumentError(absl::StrCat("frame ", frames_, " is ", width, "x", height, " but the webp is ",
                                                   options_.width, "x", options_.height));
  }
  WebPConfig config;
  if (!WebPConfigInit(&config)) return absl::InternalError("webp: library version mismatch");
  config.quality = options_.quality;
  config.lossless = options_.lossless ? 1 : 0;
  WebPPicture picture;
  if (!WebPPictureInit(&picture)) return absl::InternalError("webp: library version mismatch");
  picture.width = width;
  picture.height = height;
  picture.use_argb = 1;
  if (!WebPPictureImportRGB(&picture, rgb, width * 3)) {
    WebPPictureFree(&picture);
    return absl::ResourceExhaustedError("webp: out of memory");
  }
  const int ok = WebPAnimEncoderAdd(Enc(encoder_), &picture, TimestampMs(frames_, options_.fps), &config);
  WebPPictureFree(&picture);
  if (!ok) return absl::InternalError(absl::StrCat("webp: ", WebPAnimEncoderGetError(Enc(encoder_))));
  ++frames_;
  return absl::OkStatus();
}

absl::StatusOr<std::string> WebpAnimWriter::Finish() {
  if (frames_ == 0) return absl::InvalidArgumentError("no frames to encode");
  WebPAnimEncoder* enc = Enc(encoder_);
  if (!WebPAnimEncoderAdd(enc, nullptr, TimestampMs(frames_, options_.fps), nullptr)) {
    return absl::InternalError(absl::StrCat("webp: ", WebPAnimEncoderGetError(enc)));
  }
  WebPData data;
  WebPDataInit(&data);
  if (!WebPAnimEncoderAssemble(enc, &data)) {
    return absl::InternalError(absl::StrCat("webp: ", WebPAnimEncoderGetError(enc)));
  }
  std::string out(reinterpret_cast<const char*>(data.bytes), data.size);
  WebPDataClear(&data);
  if (options_.comment.empty()) return out;
  WebPData whole{reinterpret_cast<const uint8_t*>(out.data()), out.size()};
  WebPMux* mux = WebPMuxCreate(&whole, 1);
  if (mux == nullptr) return absl::InternalError("webp: cannot re-read the animation");
  const std::string exif = ExifUserComment(options_.comment);
  WebPData chunk{reinterpret_cast<const uint8_t*>(exif.data()), exif.size()};
  WebPData assembled;
  WebPDataInit(&assembled);
  const bool ok = WebPMuxSetChunk(mux, "EXIF", &chunk, 1) == WEBP_MUX_OK && WebPMuxAssemble(mux, &assembled) == WEBP_MUX_OK;
  WebPMuxDelete(mux);
  if (!ok) return absl::InternalError("webp: cannot add the EXIF chunk");
  std::string result(reinterpret_cast<const char*>(assembled.bytes), assembled.size);
  WebPDataClear(&assembled);
  return result;
}

}  // namespace atelier::exporter
