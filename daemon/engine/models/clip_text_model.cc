#include "engine/models/clip_text_model.h"

#include "engine/models/nn_util.h"

#include <torch/torch.h>

#include <map>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/models/checkpoint_layout.h"
#include "engine/models/nn_layers.h"

namespace atelier::engine {
namespace {

// The layers here never initialise their parameters (the checkpoint's replace them): torch::nn's Linear, Embedding
// and LayerNorm would fill 123M float32 values at random first, 0.5 GB written on each model's first job.
struct EmbeddingImpl : torch::nn::Module {
  EmbeddingImpl(int64_t count, int64_t dim) : weight(register_parameter("weight", at::empty({count, dim}), false)) {}
  torch::Tensor forward(const torch::Tensor& ids) const { return at::embedding(weight, ids); }
  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

// embeddings.{token_embedding, position_embedding, position_ids}
struct EmbeddingsImpl : torch::nn::Module {
  EmbeddingsImpl(const ClipTextConfig& c)
      : token_embedding(register_module("token_embedding", Embedding(c.vocab_size, c.hidden_size))),
        position_embedding(register_module("position_embedding", Embedding(c.max_position_embeddings, c.hidden_size))),
        position_ids(register_buffer("position_ids", torch::arange(c.max_position_embeddings).unsqueeze(0))) {}
  Embedding token_embedding;
  Embedding position_embedding;
  torch::Tensor position_ids;
};
TORCH_MODULE(Embeddings);

// encoder.layers.N.self_attn.{q,k,v,out}_proj
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(const ClipTextConfig& c)
      : heads(c.num_attention_heads),
        head_dim(c.hidden_size / c.num_attention_heads),
        q_proj(register_module("q_proj", Linear(c.hidden_size, c.hidden_size))),
        k_proj(register_module("k_proj", Linear(c.hidden_size, c.hidden_size))),
        v_proj(register_module("v_proj", Linear(c.hidden_size, c.hidden_size))),
        out_proj(register_module("out_proj", Linear(c.hidden_size, c.hidden_size))) {}

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& causal_mask) {
    const int64_t b = x.size(0), t = x.size(1);
    auto split = [&](const torch::Tensor& y) { return y.view({b, t, heads, head_dim}).transpose(1, 2); };
    const torch::Tensor q = split(q_proj(x) * (1.0 / std::sqrt(static_cast<double>(head_dim))));  // [b, h, t, d]
    const torch::Tensor k = split(k_proj(x));
    const torch::Tensor v = split(v_proj(x));
    const torch::Tensor weights = torch::softmax(torch::matmul(q, k.transpose(-1, -2)) + causal_mask, -1);
    return out_proj(torch::matmul(weights, v).transpose(1, 2).reshape({b, t, heads * head_dim}));  // [b, t, hidden]
  }

  int64_t heads, head_dim;
  Linear q_proj, k_proj, v_proj, out_proj;
};
TORCH_MODULE(Attention);

// encoder.layers.N.mlp.{fc1, fc2} with QuickGELU between.
struct MlpImpl : torch::nn::Module {
  MlpImpl(const ClipTextConfig& c)
      : fc1(register_module("fc1", Linear(c.hidden_size, c.intermediate_size))),
        fc2(register_module("fc2", Linear(c.intermediate_size, c.hidden_size))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor h = fc1(x);
    return fc2(h * torch::sigmoid(1.702 * h));  // QuickGELU
  }
  Linear fc1, fc2;
};
TORCH_MODULE(Mlp);

LayerNorm MakeLayerNorm(const ClipTextConfig& c) { return LayerNorm(c.hidden_size, c.layer_norm_eps); }

// encoder.layers.N
struct LayerImpl : torch::nn::Module {
  LayerImpl(const ClipTextConfig& c)
      : self_attn(register_module("self_attn", Attention(c))),
        layer_norm1(register_module("layer_norm1", MakeLayerNorm(c))),
        mlp(register_module("mlp", Mlp(c))),
        layer_norm2(register_module("layer_norm2", MakeLayerNorm(c))) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& causal_mask) {
    const torch::Tensor h = x + self_attn(layer_norm1(x), causal_mask);
    return h + mlp(layer_norm2(h));
  }
  Attention self_attn;
  LayerNorm layer_norm1;
  Mlp mlp;
  LayerNorm layer_norm2;
};
TORCH_MODULE(Layer);

struct EncoderImpl : torch::nn::Module {
  EncoderImpl(const ClipTextConfig& c) : layers(register_module("layers", torch::nn::ModuleList())) {
    for (int i = 0; i < c.num_hidden_layers; ++i) layers->push_back(Layer(c));
  }
  torch::nn::ModuleList layers;
};
TORCH_MODULE(Encoder);

// text_model
struct TextModelImpl : torch::nn::Module {
  TextModelImpl(const ClipTextConfig& c)
      : embeddings(register_module("embeddings", Embeddings(c))),
        encoder(register_module("encoder", Encoder(c))),
        final_layer_norm(register_module("final_layer_norm", MakeLayerNorm(c))) {}
  Embeddings embeddings;
  Encoder encoder;
  LayerNorm final_layer_norm;
};
TORCH_MODULE(TextModel);

// The checkpoint root: "text_model." prefixes every name, as under cond_stage_model.transformer.
struct RootImpl : torch::nn::Module {
  RootImpl(const ClipTextConfig& c) : text_model(register_module("text_model", TextModel(c))) {}
  TextModel text_model;
};
TORCH_MODULE(Root);

}  // namespace

struct ClipTextModel::Impl {
  ParameterTable parameters;  // Parameter() / ReplaceParameter()
  explicit Impl(const ClipTextConfig& c) : root(c) {}
  Root root;
};

ClipTextModel::ClipTextModel(const ClipTextConfig& config) : config_(config), impl_(std::make_unique<Impl>(config)) {
  impl_->root->eval();
}

ClipTextModel::~ClipTextModel() = default;

std::vector<std::pair<std::string, std::vector<std::int64_t>>> ClipTextModel::ParameterShapes(
    const ClipTextConfig& config) {
  torch::NoGradGuard no_grad;
  Root root(config);
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  for (const auto& p : root->named_parameters()) out.emplace_back(p.key(), p.value().sizes().vec());
  for (const auto& b : root->named_buffers()) out.emplace_back(b.key(), b.value().sizes().vec());
  return out;
}

absl::StatusOr<std::unique_ptr<ClipTextModel>> ClipTextModel::Create(const ClipTextConfig& config,
                                                                     const WeightMap& weights) {
  if (config.hidden_size % config.num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("text encoder: ", config.num_attention_heads,
                                                   " heads do not divide hidden size ", config.hidden_size));
  }
  // The older checkpoint naming (no "text_model.") is renamed as WebUI does.
  WeightMap renamed;
  for (const auto& [name, tensor] : weights) {
    const std::string full = NormalizeSd1Key("cond_stage_model.transformer." + name);
    renamed[full.substr(std::string("cond_stage_model.transformer.").size())] = tensor;
  }
  std::unique_ptr<ClipTextModel> model(new ClipTextModel(config));
  torch::NoGradGuard no_grad;
  auto take = [&](const std::string& name, torch::Tensor& target, bool required) -> absl::Status {
    const auto it = renamed.find(name);
    if (it == renamed.end()) {
      if (!required) return absl::OkStatus();
      return absl::NotFoundError(absl::StrCat("text encoder weight cond_stage_model.transformer.", name, " is missing"));
    }
    if (it->second.sizes() != target.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("text encoder weight cond_stage_model.transformer.", name,
                                                     " has shape [", absl::StrJoin(it->second.sizes(), ", "),
                                                     "], expected [", absl::StrJoin(target.sizes(), ", "), "]"));
    }
    target.set_data(it->second);  // shares the loaded tensor
    return absl::OkStatus();
  };
  for (auto& p : model->impl_->root->named_parameters()) {
    if (auto s = take(p.key(), p.value(), true); !s.ok()) return s;
  }
  for (auto& b : model->impl_->root->named_buffers()) {
    torch::Tensor& ids = b.value();
    const auto it = renamed.find(b.key());
    if (it == renamed.end()) continue;  // absent: 0..76, as WebUI
    if (it->second.sizes() != ids.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("text encoder buffer ", b.key(), " has the wrong shape"));
    }
    // Merged files sometimes store position_ids as floats such as 75.9999; loading into the int64 buffer
    // truncates toward zero, and WebUI does the same (it changes the output, on purpose).
    ids.set_data(it->second.to(torch::kLong));
  }
  return model;
}

std::vector<at::Tensor> ClipTextModel::HiddenStates(const at::Tensor& ids) const {
  c10::InferenceMode inference;
  TextModelImpl& m = *impl_->root->text_model;
  const int64_t t = ids.size(1);
  const torch::Tensor positions = m.embeddings->position_ids.index({0, torch::indexing::Slice(0, t)});
  torch::Tensor x = m.embeddings->token_embedding(ids) + m.embeddings->position_embedding(positions);
  const torch::Tensor mask =
      torch::full({t, t}, -std::numeric_limits<float>::infinity(), x.options()).triu(1);  // j > i is masked
  std::vector<at::Tensor> states = {x};
  for (const auto& layer : *m.encoder->layers) {
    x = layer->as<LayerImpl>()->forward(x, mask);
    states.push_back(x);
  }
  return states;
}

at::Tensor ClipTextModel::FinalLayerNorm(const at::Tensor& hidden) const {
  c10::InferenceMode inference;
  return impl_->root->text_model->final_layer_norm(hidden);
}

at::Tensor ClipTextModel::Encode(const at::Tensor& ids, int clip_skip,
                                 const std::vector<std::vector<EmbeddingFix>>& fixes) const {
  c10::InferenceMode inference;
  TextModelImpl& m = *impl_->root->text_model;
  const int64_t t = ids.size(1);
  torch::Tensor x = m.embeddings->token_embedding(ids);  // [b, t, hidden]
  for (std::size_t row = 0; row < fixes.size() && row < static_cast<std::size_t>(ids.size(0)); ++row) {
    for (const EmbeddingFix& fix : fixes[row]) {
      const int64_t length = std::min<int64_t>(t - fix.offset - 1, fix.vectors.size(0));
      if (length <= 0) continue;
      x[static_cast<int64_t>(row)]
          .narrow(0, fix.offset + 1, length)
          .copy_(fix.vectors.narrow(0, 0, length).to(x.options()));
    }
  }
  const torch::Tensor positions = m.embeddings->position_ids.index({0, torch::indexing::Slice(0, t)});
  x = x + m.embeddings->position_embedding(positions);
  const torch::Tensor mask = torch::full({t, t}, -std::numeric_limits<float>::infinity(), x.options()).triu(1);
  // Clip skip N stops N-1 blocks before the end.
  const int layers = static_cast<int>(m.encoder->layers->size());
  const int run = std::max(1, layers - std::max(0, clip_skip - 1));
  for (int i = 0; i < run; ++i) x = m.encoder->layers[static_cast<std::size_t>(i)]->as<LayerImpl>()->forward(x, mask);
  return m.final_layer_norm(x);
}


absl::StatusOr<at::Tensor> ClipTextModel::Parameter(const std::string& name) const {
  return impl_->parameters.Get(*impl_->root, name);
}

absl::Status ClipTextModel::ReplaceParameter(const std::string& name, const at::Tensor& value) {
  return impl_->parameters.Replace(*impl_->root, name, value);
}

}  // namespace atelier::engine
