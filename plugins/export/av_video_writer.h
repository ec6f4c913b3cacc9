// Animated files through FFmpeg's libraries (no `ffmpeg` process): MP4 (H.264, libx264), WebM (VP9, libvpx) and
// GIF (a palette generated over all frames with palettegen / paletteuse, as `ffmpeg -vf palettegen,paletteuse`
// does), muxed into memory. Frames are encoded as they are added (a GIF's palette filter keeps what it needs).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace atelier::exporter {

struct VideoOptions {
  std::string format;       // "mp4", "webm" or "gif"
  int width = 0, height = 0;
  double fps = 8;
  int crf = 23;             // mp4 (x264) / webm (vp9: its own crf scale; 32 when unset)
  int loop = 0;             // gif: 0 = forever, n = n times more (WebUI's loop_number)
  std::string dither = "sierra2_4a";  // gif: paletteuse dither (bayer, heckbert, floyd_steinberg, sierra2, ...)
  std::string comment;      // the infotext: MP4/WebM comment (and WebM title), GIF comment extension
};

class AvVideoWriter {
 public:
  static absl::StatusOr<std::unique_ptr<AvVideoWriter>> Open(const VideoOptions& options);
  ~AvVideoWriter();
  AvVideoWriter(const AvVideoWriter&) = delete;
  AvVideoWriter& operator=(const AvVideoWriter&) = delete;

  // One frame: RGB24, `width` x `height` as opened (INVALID_ARGUMENT for another size).
  absl::Status AddFrame(const std::uint8_t* rgb, int width, int height);
  // Flushes and returns the whole file.
  absl::StatusOr<std::string> Finish();

  int frames() const { return frames_; }

 private:
  struct Impl;
  explicit AvVideoWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int frames_ = 0;
};

// Inserts a GIF Comment Extension (the infotext, as Pillow writes `comment`) after the header and global colour
// table; other bytes unchanged.
absl::StatusOr<std::string> AddGifComment(const std::string& gif, const std::string& comment);

}  // namespace atelier::exporter
