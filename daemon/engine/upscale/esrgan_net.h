// The ESRGAN-family super-resolution nets WebUI runs through spandrel, on ATen ops:
//  - RRDBNet (ESRGAN, BasicSR / Real-ESRGAN x4plus, x4plus_anime_6B, x2plus, "4x-UltraSharp"-style community
//    files): conv_first, nb RRDBs of 3 residual dense blocks (5 convs, growth gc, LeakyReLU 0.2, residuals x0.2),
//    conv_body, log2(scale) nearest-x2 + conv + LeakyReLU, conv_hr, conv_last; x2 / x1 models pixel-unshuffle first.
//    Read in the old ESRGAN layout ("model.0", "model.1.sub.N.RDBk.convj.0", ...), the BasicSR one ("conv_first",
//    "body.N.rdbk.convj", ...) and BSRGAN's ("RRDB_trunk", "trunk_conv", "upconv1", "HRconv").
//  - SRVGGNetCompact (realesr-animevideov3, realesr-general-x4v3): conv + PReLU pairs, a last conv to
//    out·s² channels, pixel shuffle, plus the nearest-upsampled input.
// The architecture, scale, widths and depth come from the keys and shapes (spandrel's detection); wrappers
// ("params_ema", "params", "state_dict", ...) and "module." prefixes are removed. The input is what WebUI feeds:
// BGR in [0, 1], [N, 3, H, W]; the output is clamped to [0, 1].
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace atelier::engine {

class EsrganNet {
 public:
  // INVALID_ARGUMENT naming what is missing or mis-shaped, or when the tensors are no ESRGAN-family net (naming the
  // architectures known). `label` names the file in messages.
  static absl::StatusOr<std::unique_ptr<EsrganNet>> FromTensors(std::map<std::string, at::Tensor> tensors,
                                                                const std::string& label);

  // [N, in, H, W] -> [N, out, H·scale, W·scale], clamped to [0, 1]. Inputs of x2 / x1 RRDB models are padded to a
  // multiple of the unshuffle factor (reflect) and the output cropped, as spandrel does.
  at::Tensor Forward(const at::Tensor& x) const;

  int scale() const { return scale_; }
  // "ESRGAN (RRDBNet, 23 blocks, 64 features)", "Real-ESRGAN compact (SRVGGNet, 16 convs, 64 features)".
  const std::string& description() const { return description_; }
  // Moves the weights (float32) to `device`.
  void To(const at::Device& device);

 private:
  enum class Arch { kRrdb, kCompact };
  at::Tensor RrdbForward(const at::Tensor& x) const;
  at::Tensor CompactForward(const at::Tensor& x) const;
  const at::Tensor& W(const std::string& name) const { return w_.at(name); }

  Arch arch_ = Arch::kRrdb;
  std::map<std::string, at::Tensor> w_;  // RRDB: the old ESRGAN names; compact: body.i.*
  int scale_ = 4;
  int shuffle_ = 1;  // RRDB pixel-unshuffle factor (x2 models: 2)
  int blocks_ = 0, up_convs_ = 0, last_ = 0;  // RRDB: nb, up-conv count; compact: index of the last conv
  std::string description_;
};

// What an upscaler file holds ("ESRGAN (RRDBNet, 23 blocks, 64 features), 4x"), from its names and shapes only
// (no tensor data is read); the reason when it is no ESRGAN-family net.
absl::StatusOr<std::string> DescribeUpscalerFile(const std::filesystem::path& path);

}  // namespace atelier::engine
