// WebUI's grid images (modules/images.py): image_grid (cells of the largest cell size, centred, row-major on the
// grid background) and draw_grid_annotations (column labels above and row labels to the left, word-wrapped to the
// cell width / the left strip, font size (w + h) / 25, an optional margin between cells), as the X/Y/Z plot uses
// them. Text is drawn with FreeType (see image/text_renderer.h).
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace atelier::jobs {

// uint8 RGB [h, w, 3] images -> one [rows·H, cols·W, 3] image, cols = ceil(n / rows), white background.
at::Tensor ImageGrid(const std::vector<at::Tensor>& images, int rows);

// Labels one per column (`hor`) and one per row (`ver`) of cells `width` x `height` in `grid`. INVALID_ARGUMENT
// when the label counts do not match the grid; NOT_FOUND without a font.
absl::StatusOr<at::Tensor> DrawGridAnnotations(const at::Tensor& grid, int width, int height,
                                               const std::vector<std::string>& hor, const std::vector<std::string>& ver,
                                               int margin);

}  // namespace atelier::jobs
