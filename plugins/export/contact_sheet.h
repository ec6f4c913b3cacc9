// A contact sheet: a PNG grid of a job's frames (or a batch's images), each cell labelled with its frame number
// and/or seed, an optional header with the prompt and settings; text drawn with FreeType and a DejaVu font. Frames
// are shrunk to thumbnails as they arrive (the full frames are never kept).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "absl/status/statusor.h"

namespace atelier::exporter {

struct SheetOptions {
  int columns = 0;      // 0: ceil(sqrt(frames))
  int cell = 256;       // a thumbnail's longer side, pixels
  int spacing = 8;
  std::array<uint8_t, 3> background = {255, 255, 255};
  std::array<uint8_t, 3> text = {0, 0, 0};
  std::string label = "both";  // "frame", "seed", "both", "none"
  std::string header;          // drawn above the grid (the prompt and settings); empty: none
  int font_px = 14;
  std::string font_path;       // a TrueType file; empty: DejaVu Sans where Debian installs it
};

// Where things went, for tests and clients.
struct SheetLayout {
  std::vector<cv::Rect> cells;   // each frame's thumbnail
  std::vector<cv::Rect> labels;  // each frame's label box (empty rects without labels)
  cv::Rect header;
};

class TextRenderer;

class ContactSheet {
 public:
  // INVALID_ARGUMENT for bad options (unknown label kind, cell < 16, ...), NOT_FOUND without a usable font.
  static absl::StatusOr<std::unique_ptr<ContactSheet>> Create(const SheetOptions& options);
  ~ContactSheet();

  // One frame (uint8 RGB, any size) with its number and seed.
  absl::Status Add(const cv::Mat& rgb, int index, int64_t seed);
  int frames() const { return static_cast<int>(thumbs_.size()); }

  // The sheet (uint8 RGB); RESOURCE_EXHAUSTED when it would exceed `max_pixels`.
  absl::StatusOr<cv::Mat> Finish(int64_t max_pixels, SheetLayout* layout = nullptr) const;
  // Its size for `frames` frames of `width` x `height`, before any is added (to refuse a sheet early).
  cv::Size SizeFor(int frames, int width, int height) const;

 private:
  ContactSheet() = default;
  SheetOptions options_;
  std::unique_ptr<TextRenderer> text_;
  cv::Size cell_;  // from the first frame
  struct Thumb {
    cv::Mat image;
    int index;
    int64_t seed;
  };
  std::vector<Thumb> thumbs_;
};

// The default font: DejaVuSans.ttf from assets/fonts (next to the plugin's source tree install) or Debian's
// /usr/share/fonts/truetype/dejavu; "" when none is found.
std::string DefaultFontPath();

}  // namespace atelier::exporter
