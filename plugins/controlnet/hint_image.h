// From a detected map to the hint a ControlNet sees, as sd-webui-controlnet's detectmap_proc does it: the map is
// fitted to the generation size by the unit's resize mode with the extension's "high quality resize" (nearest for
// few-colour maps, thinning for one-pixel binary edges, INTER_AREA down / INTER_CUBIC up), then becomes a float
// tensor in [0, 1] (inpaint maps: RGB with masked pixels at -1).
#pragma once

#include <ATen/core/Tensor.h>
#include <opencv2/core.hpp>

namespace atelier::controlnet {

enum class ResizeMode { kJustResize = 0, kCropAndResize = 1, kResizeAndFill = 2 };

// high_quality_resize(x, (width, height)) for uint8 RGB maps and float32 RGBA inpaint maps (mask in alpha,
// binarised to 0/255 whether or not the size changes).
cv::Mat HighQualityResize(const cv::Mat& x, int width, int height);

// The map fitted to height x width by `mode` (Crop and Resize: scale by the larger factor, centre-crop; Resize and
// Fill: scale by the smaller, pad with the border's per-channel median; Just Resize: stretch). Inpaint maps
// (4 channels) are converted to float first, as the extension does.
cv::Mat FitDetectedMap(const cv::Mat& map, ResizeMode mode, int height, int width);

// Pixel Perfect's preprocessor resolution: round(k * min(raw_h, raw_w)) with k the larger of target/raw factors
// (the smaller for Resize and Fill), rounded half to even.
int PixelPerfectResolution(int raw_height, int raw_width, int target_height, int target_width, ResizeMode mode);

// The hint tensor [1, 3, h, w] float32 in [0, 1] of a fitted map; a 4-channel inpaint map becomes
// rgb * (1 - m) - m with m = (mask > 0.5): masked pixels are -1 (the extension's inpaint protocol).
at::Tensor HintTensor(const cv::Mat& fitted);

// A uint8 RGB image of a fitted map for the client (inpaint maps show their RGB with masked pixels black).
cv::Mat DisplayMap(const cv::Mat& fitted);

// The RGB channels of a fitted map as uint8 (an inpaint map's original image, mask ignored).
cv::Mat DisplayRgb(const cv::Mat& fitted);

}  // namespace atelier::controlnet
