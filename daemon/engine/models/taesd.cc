#include "engine/models/taesd.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/models/nn_layers.h"
#include "engine/models/nn_util.h"
#include "engine/io/tensor_file.h"

namespace atelier::engine {
namespace {

constexpr int64_t kWidth = 64;         // channels of every hidden layer
constexpr int64_t kLatentChannels = 4;

// The nn.Sequential of a Block: conv (index 0), ReLU, conv (2), ReLU, conv (4).
struct BlockConvsImpl : torch::nn::Module {
  BlockConvsImpl()
      : c0(register_module("0", Conv2d(kWidth, kWidth, 3, 1, 1))),
        c2(register_module("2", Conv2d(kWidth, kWidth, 3, 1, 1))),
        c4(register_module("4", Conv2d(kWidth, kWidth, 3, 1, 1))) {}
  Conv2d c0, c2, c4;
};
TORCH_MODULE(BlockConvs);

// Block(x) = ReLU(conv(x) + x) (n_in == n_out everywhere, so the skip is the identity).
struct BlockImpl : torch::nn::Module {
  BlockImpl() : conv(register_module("conv", BlockConvs())) {}
  at::Tensor forward(const at::Tensor& x) const {
    at::Tensor h = conv->c0->forward(x).relu_();
    h = conv->c2->forward(h).relu_();
    return conv->c4->forward(h).add_(x).relu_();
  }
  BlockConvs conv;
};
TORCH_MODULE(Block);

// One entry of the nn.Sequential; layers without parameters (Clamp, ReLU, Upsample) have no module.
struct Step {
  enum Kind { kClamp, kConv, kRelu, kBlock, kUpsample } kind;
  Conv2d conv{nullptr};
  Block block{nullptr};
};

// The nn.Sequential of a part, registering each layer with parameters under its index.
class SequentialImpl : public torch::nn::Module {
 public:
  explicit SequentialImpl(TaesdPart part) {
    if (part == TaesdPart::kDecoder) {
      Add(Step::kClamp);
      AddConv(kLatentChannels, kWidth, 1, true);
      Add(Step::kRelu);
      for (int level = 0; level < 3; ++level) {
        for (int i = 0; i < 3; ++i) AddBlock();
        Add(Step::kUpsample);
        AddConv(kWidth, kWidth, 1, false);
      }
      AddBlock();
      AddConv(kWidth, 3, 1, true);
    } else {
      AddConv(3, kWidth, 1, true);
      AddBlock();
      for (int level = 0; level < 3; ++level) {
        AddConv(kWidth, kWidth, 2, false);
        for (int i = 0; i < 3; ++i) AddBlock();
      }
      AddConv(kWidth, kLatentChannels, 1, true);
    }
  }

  at::Tensor forward(at::Tensor x) const {
    for (const Step& step : steps_) {
      switch (step.kind) {
        case Step::kClamp: x = at::tanh(x / 3) * 3; break;
        case Step::kConv: x = step.conv->forward(x); break;
        case Step::kRelu: x.relu_(); break;
        case Step::kBlock: x = step.block->forward(x); break;
        case Step::kUpsample: x = at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}); break;
      }
    }
    return x;
  }

 private:
  std::string Index() const { return std::to_string(steps_.size()); }
  void Add(Step::Kind kind) { steps_.push_back(Step{kind}); }
  void AddConv(int64_t in, int64_t out, int64_t stride, bool bias) {
    Step step{Step::kConv};
    step.conv = register_module(Index(), Conv2d(in, out, 3, stride, 1, bias));
    steps_.push_back(step);
  }
  void AddBlock() {
    Step step{Step::kBlock};
    step.block = register_module(Index(), Block());
    steps_.push_back(step);
  }
  std::vector<Step> steps_;
};
TORCH_MODULE(Sequential);

// The weights of `part` with the "<part>." prefix removed; names without any part prefix are taken as they are.
// Weights of the other part (a combined file) are left out.
WeightMap PartWeights(const WeightMap& weights, TaesdPart part) {
  const std::string own = absl::StrCat(TaesdPartName(part), ".");
  const std::string other = absl::StrCat(TaesdPartName(part == TaesdPart::kDecoder ? TaesdPart::kEncoder : TaesdPart::kDecoder), ".");
  WeightMap out;
  for (const auto& [name, tensor] : weights) {
    if (name.rfind(own, 0) == 0) {
      out[name.substr(own.size())] = tensor;
    } else if (name.rfind(other, 0) != 0) {
      out[name] = tensor;
    }
  }
  return out;
}

absl::StatusOr<Sequential> BuildPart(TaesdPart part, const WeightMap& weights) {
  Sequential module(part);
  try {
    torch::NoGradGuard no_grad;
    if (auto s = LoadWeights(*module, PartWeights(weights, part), absl::StrCat("TAESD ", TaesdPartName(part)));
        !s.ok()) {
      return s;
    }
  } catch (const std::exception& e) {
    return StatusFromException(e, absl::StrCat("building the TAESD ", TaesdPartName(part)));
  }
  return module;
}

absl::Status CheckInput(const at::Tensor& x, int64_t channels, int64_t multiple, const char* what) {
  if (!x.defined() || x.dim() != 4 || x.size(1) != channels || x.size(0) < 1 || x.size(2) < multiple ||
      x.size(3) < multiple || x.size(2) % multiple != 0 || x.size(3) % multiple != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TAESD ", what, " takes [batch, ", channels, ", height, width]", multiple > 1 ? absl::StrCat(" with height and width multiples of ", multiple) : "",
        ", got [", x.defined() ? absl::StrJoin(x.sizes(), ", ") : "undefined", "]"));
  }
  return absl::OkStatus();
}

}  // namespace

const char* TaesdPartName(TaesdPart part) { return part == TaesdPart::kDecoder ? "decoder" : "encoder"; }

struct Taesd::Impl {
  Sequential decoder{nullptr}, encoder{nullptr};
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;

  absl::StatusOr<at::Tensor> Run(const Sequential& part, const at::Tensor& x, const char* doing) const {
    try {
      c10::InferenceMode inference;
      return part->forward(x.to(at::TensorOptions().dtype(dtype).device(device))).to(at::kFloat);
    } catch (const std::exception& e) {
      return StatusFromException(e, doing);
    }
  }
};

Taesd::Taesd() : impl_(std::make_unique<Impl>()) {}
Taesd::~Taesd() = default;

bool Taesd::has_decoder() const { return !impl_->decoder.is_empty(); }
bool Taesd::has_encoder() const { return !impl_->encoder.is_empty(); }

std::vector<std::pair<std::string, std::vector<std::int64_t>>> Taesd::ParameterShapes(TaesdPart part) {
  Sequential module(part);
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  for (const auto& p : module->named_parameters()) out.emplace_back(p.key(), p.value().sizes().vec());
  return out;
}

absl::StatusOr<std::unique_ptr<Taesd>> Taesd::Create(const WeightMap* decoder, const WeightMap* encoder) {
  if (decoder == nullptr && encoder == nullptr) {
    return absl::InvalidArgumentError("TAESD: neither decoder nor encoder weights were given");
  }
  std::unique_ptr<Taesd> taesd(new Taesd());
  at::Tensor probe;
  if (decoder != nullptr) {
    auto part = BuildPart(TaesdPart::kDecoder, *decoder);
    if (!part.ok()) return part.status();
    taesd->impl_->decoder = *part;
    probe = taesd->impl_->decoder->named_parameters()["1.weight"];
  }
  if (encoder != nullptr) {
    auto part = BuildPart(TaesdPart::kEncoder, *encoder);
    if (!part.ok()) return part.status();
    taesd->impl_->encoder = *part;
    if (!probe.defined()) probe = taesd->impl_->encoder->named_parameters()["0.weight"];
  }
  taesd->impl_->dtype = probe.scalar_type();
  taesd->impl_->device = probe.device();
  return taesd;
}

absl::StatusOr<std::filesystem::path> Taesd::FindFile(const std::filesystem::path& folder, TaesdPart part) {
  const std::string stem = absl::StrCat("taesd_", TaesdPartName(part));
  std::vector<std::string> names;
  for (const char* ext : {".safetensors", ".pth"}) {
    names.push_back(stem + ext);
    std::error_code ec;
    if (std::filesystem::is_regular_file(folder / names.back(), ec)) return folder / names.back();
  }
  return absl::NotFoundError(absl::StrCat("no TAESD ", TaesdPartName(part), " in ", folder.string(), ": put ",
                                          absl::StrJoin(names, " or "),
                                          " there (the released files of madebyollin/taesd, as WebUI downloads them)"));
}

absl::StatusOr<std::unique_ptr<Taesd>> Taesd::LoadFromFolder(const std::filesystem::path& folder, at::ScalarType dtype) {
  WeightMap parts[2];
  bool found[2] = {false, false};
  std::string why;
  for (TaesdPart part : {TaesdPart::kDecoder, TaesdPart::kEncoder}) {
    const int i = static_cast<int>(part);
    auto file = FindFile(folder, part);
    if (!file.ok()) {
      absl::StrAppend(&why, why.empty() ? "" : "; ", file.status().message());
      continue;
    }
    auto set = ReadTensorSet(*file);
    if (!set.ok()) {
      return absl::Status(set.status().code(), absl::StrCat("reading ", file->string(), ": ", set.status().message()));
    }
    try {
      for (auto& [name, tensor] : set->tensors) parts[i][name] = tensor.to(dtype);
    } catch (const std::exception& e) {
      return StatusFromException(e, absl::StrCat("converting ", file->string()));
    }
    found[i] = true;
  }
  if (!found[0] && !found[1]) {
    return absl::FailedPreconditionError(absl::StrCat("TAESD is not available: ", why));
  }
  return Create(found[0] ? &parts[0] : nullptr, found[1] ? &parts[1] : nullptr);
}

absl::StatusOr<at::Tensor> Taesd::Decode(const at::Tensor& latent) const {
  if (!has_decoder()) {
    return absl::FailedPreconditionError("TAESD decode needs taesd_decoder (.safetensors or .pth) in models/VAE-approx");
  }
  if (auto s = CheckInput(latent, kLatentChannels, 1, "decode"); !s.ok()) return s;
  return impl_->Run(impl_->decoder, latent, "decoding with TAESD");
}

absl::StatusOr<at::Tensor> Taesd::Encode(const at::Tensor& image) const {
  if (!has_encoder()) {
    return absl::FailedPreconditionError("TAESD encode needs taesd_encoder (.safetensors or .pth) in models/VAE-approx");
  }
  if (auto s = CheckInput(image, 3, 8, "encode"); !s.ok()) return s;
  return impl_->Run(impl_->encoder, image, "encoding with TAESD");
}

}  // namespace atelier::engine
