// Text on RGB images with FreeType, the way WebUI's grid labels use PIL's ImageFont: a TrueType font at a pixel
// size, the advance width of a string (ImageDraw.textlength), a line's height, and drawing centred on a point
// (anchor "mm": horizontally centred, vertically half way between the ascender and the descender). The font is
// DejaVu Sans from fonts-dejavu-core (WebUI ships Roboto; label glyphs differ, the layout rules are WebUI's).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace atelier::engine {

class TextRenderer {
 public:
  // NOT_FOUND when no DejaVu font is installed; INVALID_ARGUMENT for a size below 1.
  static absl::StatusOr<std::unique_ptr<TextRenderer>> Open(int pixel_size, const std::string& font_path = "");
  ~TextRenderer();
  TextRenderer(const TextRenderer&) = delete;
  TextRenderer& operator=(const TextRenderer&) = delete;

  int pixel_size() const { return px_; }
  // Sum of the glyph advances of UTF-8 `text`, in pixels.
  int Width(const std::string& text) const;
  // Ascender + descender: a line's height (0 for empty text).
  int Height(const std::string& text) const;
  // Draws `text` centred on (cx, cy) into an RGB image `rgb` [height][width][3], alpha-blending the glyphs' coverage
  // in `colour`, clipped to the image.
  void DrawCentered(uint8_t* rgb, int width, int height, const std::string& text, double cx, double cy,
                    const uint8_t colour[3]) const;

 private:
  TextRenderer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int px_ = 0;
};

// The default font's path, empty when none is installed.
std::string DefaultFontPath();

}  // namespace atelier::engine
