#include "image/text_renderer.h"

#include <ft2build.h>
#include FT_FREETYPE_H

#include <cmath>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"

namespace atelier::engine {
namespace {

std::vector<uint32_t> Codepoints(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    uint32_t cp = c;
    const int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if (extra == 3) cp = c & 0x07;
    if (extra == 2) cp = c & 0x0F;
    if (extra == 1) cp = c & 0x1F;
    ++i;
    for (int k = 0; k < extra && i < s.size(); ++k, ++i) cp = (cp << 6) | (static_cast<unsigned char>(s[i]) & 0x3F);
    out.push_back(cp);
  }
  return out;
}

}  // namespace

struct TextRenderer::Impl {
  FT_Library library = nullptr;
  FT_Face face = nullptr;
  ~Impl() {
    if (face != nullptr) FT_Done_Face(face);
    if (library != nullptr) FT_Done_FreeType(library);
  }
};

std::string DefaultFontPath() {
  for (const char* p : {"/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"}) {
    if (std::filesystem::exists(p)) return p;
  }
  return "";
}

absl::StatusOr<std::unique_ptr<TextRenderer>> TextRenderer::Open(int pixel_size, const std::string& font_path) {
  if (pixel_size < 1) return absl::InvalidArgumentError("font size below 1 pixel");
  const std::string path = font_path.empty() ? DefaultFontPath() : font_path;
  if (path.empty()) return absl::NotFoundError("no DejaVu font found (install fonts-dejavu-core)");
  std::unique_ptr<TextRenderer> r(new TextRenderer());
  r->impl_ = std::make_unique<Impl>();
  if (FT_Init_FreeType(&r->impl_->library) != 0) return absl::InternalError("FreeType cannot start");
  if (FT_New_Face(r->impl_->library, path.c_str(), 0, &r->impl_->face) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot read the font '", path, "' (install fonts-dejavu-core)"));
  }
  FT_Set_Pixel_Sizes(r->impl_->face, 0, static_cast<FT_UInt>(pixel_size));
  r->px_ = pixel_size;
  return r;
}

TextRenderer::~TextRenderer() = default;

int TextRenderer::Width(const std::string& text) const {
  int w = 0;
  for (uint32_t cp : Codepoints(text)) {
    if (FT_Load_Char(impl_->face, cp, FT_LOAD_DEFAULT) == 0) w += static_cast<int>(impl_->face->glyph->advance.x >> 6);
  }
  return w;
}

int TextRenderer::Height(const std::string& text) const {
  if (text.empty()) return 0;
  const FT_Size_Metrics& m = impl_->face->size->metrics;
  return static_cast<int>((m.ascender >> 6) - (m.descender >> 6));
}

void TextRenderer::DrawCentered(uint8_t* rgb, int width, int height, const std::string& text, double cx, double cy,
                                const uint8_t colour[3]) const {
  const FT_Size_Metrics& m = impl_->face->size->metrics;
  const int ascender = static_cast<int>(m.ascender >> 6), descender = static_cast<int>(m.descender >> 6);
  // "mm": the middle between ascender and descender lines sits at cy.
  const int baseline = static_cast<int>(std::lround(cy + (ascender + descender) / 2.0));
  int pen = static_cast<int>(std::lround(cx - Width(text) / 2.0));
  for (uint32_t cp : Codepoints(text)) {
    if (FT_Load_Char(impl_->face, cp, FT_LOAD_RENDER) != 0) continue;
    const FT_GlyphSlot g = impl_->face->glyph;
    for (unsigned row = 0; row < g->bitmap.rows; ++row) {
      for (unsigned col = 0; col < g->bitmap.width; ++col) {
        const int x = pen + g->bitmap_left + static_cast<int>(col), y = baseline - g->bitmap_top + static_cast<int>(row);
        if (x < 0 || y < 0 || x >= width || y >= height) continue;
        const int a = g->bitmap.buffer[row * static_cast<unsigned>(g->bitmap.pitch) + col];
        uint8_t* p = rgb + (static_cast<size_t>(y) * width + x) * 3;
        for (int c = 0; c < 3; ++c) p[c] = static_cast<uint8_t>((p[c] * (255 - a) + colour[c] * a + 127) / 255);
      }
    }
    pen += static_cast<int>(g->advance.x >> 6);
  }
}

}  // namespace atelier::engine
