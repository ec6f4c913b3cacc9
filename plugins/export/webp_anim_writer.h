// Animated WebP with libwebp's animation encoder (what sd-webui-animatediff's Pillow save uses underneath): quality
// 80 or lossless, loop count, frame durations 1000/fps ms, the infotext as an EXIF UserComment (as WebUI writes it
// into still WebP files).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace atelier::exporter {

struct WebpOptions {
  int width = 0, height = 0;
  double fps = 8;
  int loop = 0;          // 0 = forever
  float quality = 80;
  bool lossless = false;
  std::string comment;   // EXIF UserComment
};

class WebpAnimWriter {
 public:
  static absl::StatusOr<std::unique_ptr<WebpAnimWriter>> Open(const WebpOptions& options);
  ~WebpAnimWriter();
  absl::Status AddFrame(const std::uint8_t* rgb, int width, int height);
  absl::StatusOr<std::string> Finish();

 private:
  WebpAnimWriter() = default;
  WebpOptions options_;
  void* encoder_ = nullptr;  // WebPAnimEncoder
  int frames_ = 0;
};

// An EXIF block (TIFF little-endian, IFD0 -> Exif IFD -> UserComment) holding `text` as piexif's
// UserComment.dump(text, encoding="unicode") does: "UNICODE\0" then UTF-16 (big-endian).
std::string ExifUserComment(const std::string& text);

}  // namespace atelier::exporter
