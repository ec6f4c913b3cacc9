#include "jobs/xyz_grid.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "image/text_renderer.h"

namespace atelier::jobs {
namespace {

struct Line {
  std::string text;
  int w = 0, h = 0;
};

// draw_grid_annotations' wrap: words added to the last line while it fits `allowed`, else a new line.
std::vector<Line> Wrap(const engine::TextRenderer& font, const std::string& text, int allowed) {
  std::vector<std::string> lines = {""};
  for (absl::string_view word : absl::StrSplit(text, absl::ByAnyChar(" \t\n\r"), absl::SkipEmpty())) {
    const std::string candidate(absl::StripAsciiWhitespace(absl::StrCat(lines.back(), " ", word)));
    if (font.Width(candidate) <= allowed) {
      lines.back() = candidate;
    } else {
      lines.emplace_back(word);
    }
  }
  std::vector<Line> out;
  for (const auto& l : lines) out.push_back({l, font.Width(l), font.Height(l)});
  return out;
}

}  // namespace

at::Tensor ImageGrid(const std::vector<at::Tensor>& images, int rows) {
  const int n = static_cast<int>(images.size());
  rows = std::max(1, std::min(rows, n));
  const int cols = (n + rows - 1) / rows;
  int64_t w = 0, h = 0;
  for (const auto& i : images) {
    w = std::max(w, i.size(1));
    h = std::max(h, i.size(0));
  }
  at::Tensor grid = at::full({rows * h, cols * w, 3}, 255, at::kByte);
  for (int i = 0; i < n; ++i) {
    const at::Tensor& img = images[static_cast<size_t>(i)];
    const int64_t x = (i % cols) * w + (w - img.size(1)) / 2, y = (i / cols) * h + (h - img.size(0)) / 2;
    grid.slice(0, y, y + img.size(0)).slice(1, x, x + img.size(1)).copy_(img);
  }
  return grid;
}

absl::StatusOr<at::Tensor> DrawGridAnnotations(const at::Tensor& grid, int width, int height,
                                               const std::vector<std::string>& hor, const std::vector<std::string>& ver,
                                               int margin) {
  const int fontsize = (width + height) / 25;
  const int ls = fontsize / 2;
  auto font = engine::TextRenderer::Open(std::max(1, fontsize));
  if (!font.ok()) return font.status();
  size_t ver_chars = 0;
  for (const auto& t : ver) ver_chars += t.size();
  const int pad_left = ver_chars == 0 ? 0 : width * 3 / 4;
  const int cols = static_cast<int>(grid.size(1)) / width, rows = static_cast<int>(grid.size(0)) / height;
  if (cols != static_cast<int>(hor.size())) {
    return absl::InvalidArgumentError(absl::StrCat("bad number of horizontal texts: ", hor.size(), "; must be ", cols));
  }
  if (rows != static_cast<int>(ver.size())) {
    return absl::InvalidArgumentError(absl::StrCat("bad number of vertical texts: ", ver.size(), "; must be ", rows));
  }
  std::vector<std::vector<Line>> hor_lines, ver_lines;
  for (const auto& t : hor) hor_lines.push_back(Wrap(**font, t, width));
  for (const auto& t : ver) ver_lines.push_back(Wrap(**font, t, pad_left));
  std::vector<int> hor_h, ver_h;
  for (const auto& lines : hor_lines) {
    int s = 0;
    for (const auto& l : lines) s += l.h + ls;
    hor_h.push_back(s - ls);
  }
  for (const auto& lines : ver_lines) {
    int s = 0;
    for (const auto& l : lines) s += l.h;  // WebUI subtracts the spacing once per line here
    ver_h.push_back(s);
  }
  int hor_sum = 0;
  for (int h : hor_h) hor_sum += h;
  const int pad_top = hor_sum == 0 ? 0 : *std::max_element(hor_h.begin(), hor_h.end()) + ls * 2;
  const int64_t out_w = grid.size(1) + pad_left + static_cast<int64_t>(margin) * (cols - 1);
  const int64_t out_h = grid.size(0) + pad_top + static_cast<int64_t>(margin) * (rows - 1);
  at::Tensor result = at::full({out_h, out_w, 3}, 255, at::kByte);
  for (int row = 0; row < rows; ++row) {
    for (int col = 0; col < cols; ++col) {
      const int64_t x = pad_left + static_cast<int64_t>(width + margin) * col;
      const int64_t y = pad_top + static_cast<int64_t>(height + margin) * row;
      result.slice(0, y, y + height).slice(1, x, x + width)
          .copy_(grid.slice(0, static_cast<int64_t>(height) * row, static_cast<int64_t>(height) * (row + 1))
                     .slice(1, static_cast<int64_t>(width) * col, static_cast<int64_t>(width) * (col + 1)));
    }
  }
  result = result.contiguous();
  static const uint8_t kBlack[3] = {0, 0, 0};
  const auto draw = [&](double x, double y, const std::vector<Line>& lines, int allowed) -> absl::Status {
    for (const Line& l : lines) {
      // Words wider than the space get a smaller font, one pixel at a time.
      const engine::TextRenderer* f = font->get();
      std::unique_ptr<engine::TextRenderer> smaller;
      int size = fontsize;
      while (f->Width(l.text) > allowed && size > 1) {
        auto next = engine::TextRenderer::Open(--size);
        if (!next.ok()) return next.status();
        smaller = *std::move(next);
        f = smaller.get();
      }
      f->DrawCentered(result.data_ptr<uint8_t>(), static_cast<int>(out_w), static_cast<int>(out_h), l.text, x,
                      y + l.h / 2.0, kBlack);
      y += l.h + ls;
    }
    return absl::OkStatus();
  };
  for (int col = 0; col < cols; ++col) {
    const double x = pad_left + (width + margin) * col + width / 2.0;
    const double y = pad_top / 2.0 - hor_h[static_cast<size_t>(col)] / 2.0;
    if (auto s = draw(x, y, hor_lines[static_cast<size_t>(col)], width); !s.ok()) return s;
  }
  for (int row = 0; row < rows; ++row) {
    const double x = pad_left / 2.0;
    const double y = pad_top + (height + margin) * row + height / 2.0 - ver_h[static_cast<size_t>(row)] / 2.0;
    if (auto s = draw(x, y, ver_lines[static_cast<size_t>(row)], pad_left); !s.ok()) return s;
  }
  return result;
}

}  // namespace atelier::jobs
