#include "contact_sheet.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <ft2build.h>
#include FT_FREETYPE_H
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"

namespace atelier::exporter {

// FreeType glyphs blended onto an RGB image.
class TextRenderer {
 public:
  static absl::StatusOr<std::unique_ptr<TextRenderer>> Open(const std::string& path, int px) {
    std::unique_ptr<TextRenderer> r(new TextRenderer());
    if (FT_Init_FreeType(&r->library_) != 0) return absl::InternalError("FreeType cannot start");
    if (FT_New_Face(r->library_, path.c_str(), 0, &r->face_) != 0) {
      return absl::NotFoundError(absl::StrCat("cannot read the font '", path, "' (install fonts-dejavu-core)"));
    }
    FT_Set_Pixel_Sizes(r->face_, 0, static_cast<FT_UInt>(px));
    r->px_ = px;
    return r;
  }
  ~TextRenderer() {
    if (face_ != nullptr) FT_Done_Face(face_);
    if (library_ != nullptr) FT_Done_FreeType(library_);
  }

  // Draws UTF-8 `text` with its top-left at (x, y), clipped to `box`; returns the advance width in pixels.
  int Draw(cv::Mat& image, const std::string& text, int x, int y, const cv::Rect& box, const std::array<uint8_t, 3>& colour) const {
    const int baseline = y + static_cast<int>(face_->size->metrics.ascender >> 6);
    int pen = x;
    for (uint32_t cp : Codepoints(text)) {
      if (FT_Load_Char(face_, cp, FT_LOAD_RENDER) != 0) continue;
      const FT_GlyphSlot g = face_->glyph;
      for (unsigned row = 0; row < g->bitmap.rows; ++row) {
        for (unsigned col = 0; col < g->bitmap.width; ++col) {
          const int px = pen + g->bitmap_left + static_cast<int>(col), py = baseline - g->bitmap_top + static_cast<int>(row);
          if (!box.contains(cv::Point(px, py))) continue;
          const float a = g->bitmap.buffer[row * g->bitmap.pitch + col] / 255.0f;
          auto& p = image.at<cv::Vec3b>(py, px);
          for (int c = 0; c < 3; ++c) p[c] = static_cast<uint8_t>(std::lround(p[c] * (1 - a) + colour[c] * a));
        }
      }
      pen += static_cast<int>(g->advance.x >> 6);
    }
    return pen - x;
  }
  int Width(const std::string& text) const {
    int w = 0;
    for (uint32_t cp : Codepoints(text)) {
      if (FT_Load_Char(face_, cp, FT_LOAD_DEFAULT) == 0) w += static_cast<int>(face_->glyph->advance.x >> 6);
    }
    return w;
  }
  int line_height() const { return px_ + 4; }

 private:
  TextRenderer() = default;
  static std::vector<uint32_t> Codepoints(const std::string& s) {
    std::vector<uint32_t> out;
    for (size_t i = 0; i < s.size();) {
      const auto c = static_cast<unsigned char>(s[i]);
      uint32_t cp = c;
      int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
      if (extra == 3) cp = c & 0x07;
      if (extra == 2) cp = c & 0x0F;
      if (extra == 1) cp = c & 0x1F;
      ++i;
      for (int k = 0; k < extra && i < s.size(); ++k, ++i) cp = (cp << 6) | (static_cast<unsigned char>(s[i]) & 0x3F);
      out.push_back(cp == '\n' ? ' ' : cp);
    }
    return out;
  }
  FT_Library library_ = nullptr;
  FT_Face face_ = nullptr;
  int px_ = 14;
};

std::string DefaultFontPath() {
  for (const char* p : {"/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"}) {
    if (std::filesystem::exists(p)) return p;
  }
  return "";
}

ContactSheet::~ContactSheet() = default;

absl::StatusOr<std::unique_ptr<ContactSheet>> ContactSheet::Create(const SheetOptions& options) {
  if (options.label != "frame" && options.label != "seed" && options.label != "both" && options.label != "none") {
    return absl::InvalidArgumentError(absl::StrCat("contact sheet label '", options.label.substr(0, 32),
                                                   "' is not one of frame, seed, both, none"));
  }
  if (options.cell < 16 || options.cell > 2048) return absl::InvalidArgumentError("contact sheet cell must be 16..2048");
  if (options.spacing < 0 || options.spacing > 256) return absl::InvalidArgumentError("contact sheet spacing must be 0..256");
  if (options.columns < 0 || options.columns > 256) return absl::InvalidArgumentError("contact sheet columns must be 0..256");
  if (options.font_px < 6 || options.font_px > 96) return absl::InvalidArgumentError("contact sheet font size must be 6..96");
  std::unique_ptr<ContactSheet> sheet(new ContactSheet());
  sheet->options_ = options;
  const std::string font = options.font_path.empty() ? DefaultFontPath() : options.font_path;
  if (font.empty()) return absl::NotFoundError("no DejaVu font found (install fonts-dejavu-core)");
  auto text = TextRenderer::Open(font, options.font_px);
  if (!text.ok()) return text.status();
  sheet->text_ = std::move(*text);
  return sheet;
}

absl::Status ContactSheet::Add(const cv::Mat& rgb, int index, int64_t seed) {
  if (rgb.empty() || rgb.type() != CV_8UC3) return absl::InvalidArgumentError("contact sheet: a frame is not RGB");
  if (thumbs_.empty()) {
    const double scale = static_cast<double>(options_.cell) / std::max(rgb.cols, rgb.rows);
    cell_ = cv::Size(std::max(1, static_cast<int>(std::lround(rgb.cols * scale))),
                     std::max(1, static_cast<int>(std::lround(rgb.rows * scale))));
  }
  // Fit inside the cell keeping the aspect (frames of another size are letterboxed).
  const double scale = std::min(static_cast<double>(cell_.width) / rgb.cols, static_cast<double>(cell_.height) / rgb.rows);
  const cv::Size size(std::max(1, static_cast<int>(std::lround(rgb.cols * scale))),
                      std::max(1, static_cast<int>(std::lround(rgb.rows * scale))));
  cv::Mat thumb;
  if (size == rgb.size()) {
    thumb = rgb.clone();
  } else {
    cv::resize(rgb, thumb, size, 0, 0, scale < 1 ? cv::INTER_AREA : cv::INTER_CUBIC);
  }
  thumbs_.push_back({thumb, index, seed});
  return absl::OkStatus();
}

cv::Size ContactSheet::SizeFor(int frames, int width, int height) const {
  const double scale = static_cast<double>(options_.cell) / std::max(width, height);
  const int cw = std::max(1, static_cast<int>(std::lround(width * scale)));
  const int ch = std::max(1, static_cast<int>(std::lround(height * scale)));
  const int cols = options_.columns > 0 ? std::min(options_.columns, std::max(frames, 1))
                                        : static_cast<int>(std::ceil(std::sqrt(std::max(frames, 1))));
  const int rows = (std::max(frames, 1) + cols - 1) / cols;
  const int label_h = options_.label == "none" ? 0 : text_->line_height();
  const int header_h = options_.header.empty() ? 0 : 3 * text_->line_height() + options_.spacing;
  return cv::Size(cols * cw + (cols + 1) * options_.spacing,
                  header_h + rows * (ch + label_h) + (rows + 1) * options_.spacing);
}

absl::StatusOr<cv::Mat> ContactSheet::Finish(int64_t max_pixels, SheetLayout* layout) const {
  if (thumbs_.empty()) return absl::InvalidArgumentError("contact sheet: no frames");
  const int n = static_cast<int>(thumbs_.size());
  const cv::Size size = SizeFor(n, cell_.width, cell_.height);
  if (static_cast<int64_t>(size.width) * size.height > max_pixels) {
    return absl::ResourceExhaustedError(absl::StrCat("the contact sheet would be ", size.width, "x", size.height,
                                                     " pixels, over the limit of ", max_pixels,
                                                     "; use a smaller cell or fewer columns"));
  }
  const SheetOptions& o = options_;
  cv::Mat sheet(size, CV_8UC3, cv::Scalar(o.background[0], o.background[1], o.background[2]));
  const int cols = o.columns > 0 ? std::min(o.columns, n) : static_cast<int>(std::ceil(std::sqrt(n)));
  const int label_h = o.label == "none" ? 0 : text_->line_height();
  int top = o.spacing;
  SheetLayout local;
  if (!o.header.empty()) {
    // Up to three lines, broken at spaces to fit the width.
    local.header = cv::Rect(o.spacing, o.spacing, size.width - 2 * o.spacing, 3 * text_->line_height());
    std::vector<std::string> lines(1);
    std::string word;
    auto flush = [&]() {
      if (word.empty()) return;
      const std::string candidate = lines.back().empty() ? word : lines.back() + " " + word;
      if (text_->Width(candidate) <= local.header.width || lines.back().empty()) {
        lines.back() = candidate;
      } else {
        lines.push_back(word);
      }
      word.clear();
    };
    for (char c : o.header) {
      if (c == ' ' || c == '\n') {
        flush();
        if (c == '\n') lines.emplace_back();
      } else {
        word.push_back(c);
      }
    }
    flush();
    for (size_t i = 0; i < lines.size() && i < 3; ++i) {
      text_->Draw(sheet, lines[i], local.header.x, local.header.y + static_cast<int>(i) * text_->line_height(),
                  local.header, o.text);
    }
    top += local.header.height + o.spacing;
  }
  for (int i = 0; i < n; ++i) {
    const int r = i / cols, c = i % cols;
    const cv::Rect cell(o.spacing + c * (cell_.width + o.spacing), top + r * (cell_.height + label_h + o.spacing),
                        cell_.width, cell_.height);
    const cv::Mat& thumb = thumbs_[static_cast<size_t>(i)].image;
    const cv::Rect placed(cell.x + (cell.width - thumb.cols) / 2, cell.y + (cell.height - thumb.rows) / 2, thumb.cols,
                          thumb.rows);
    thumb.copyTo(sheet(placed));
    local.cells.push_back(placed);
    cv::Rect label;
    if (label_h > 0) {
      label = cv::Rect(cell.x, cell.y + cell.height, cell.width, label_h);
      const Thumb& t = thumbs_[static_cast<size_t>(i)];
      const std::string text = o.label == "frame" ? absl::StrCat("#", t.index)
                               : o.label == "seed" ? absl::StrCat(t.seed)
                                                   : absl::StrCat("#", t.index, "  ", t.seed);
      const int w = text_->Width(text);
      text_->Draw(sheet, text, label.x + std::max(0, (label.width - w) / 2), label.y + 2, label, o.text);
    }
    local.labels.push_back(label);
  }
  if (layout != nullptr) *layout = local;
  return sheet;
}

}  // namespace atelier::exporter
