#include "engine/models/sd_config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_join.h"

namespace atelier::engine {
namespace fs = std::filesystem;
namespace {

// Reads node[key] into `out` when present; a value of the wrong type is an error naming the key.
template <typename T>
absl::Status Read(const YAML::Node& node, const char* key, T& out, const std::string& where) {
  const YAML::Node value = node[key];
  if (!value) return absl::OkStatus();
  try {
    out = value.as<T>();
  } catch (const YAML::Exception&) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " has an invalid value"));
  }
  return absl::OkStatus();
}

#define ATELIER_YAML_READ(node, key, field, where)                            \
  do {                                                                        \
    if (absl::Status s = Read(node, key, field, where); !s.ok()) return s;    \
  } while (false)

std::string Shape(const std::vector<std::int64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

// Checks tensor `name` has `expected` shape (-1 entries are free). Missing tensors are errors only when `required`.
absl::Status Expect(const TensorIndex& index, const std::string& name, const std::vector<std::int64_t>& expected,
                    const std::string& setting, const std::string& label, bool required = true) {
  const TensorInfo* t = index.Find(name);
  if (t == nullptr) {
    if (!required) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("'", label, "': ", setting, " needs tensor ", name,
                                                   ", which the file does not have"));
  }
  bool match = t->shape.size() == expected.size();
  for (std::size_t i = 0; match && i < expected.size(); ++i) match = expected[i] < 0 || expected[i] == t->shape[i];
  if (!match) {
    std::vector<std::string> want;
    for (auto e : expected) want.push_back(e < 0 ? "*" : absl::StrCat(e));
    return absl::InvalidArgumentError(absl::StrCat("'", label, "': ", setting, " implies ", name, " of shape [",
                                                   absl::StrJoin(want, ", "), "], the file has ", Shape(t->shape)));
  }
  return absl::OkStatus();
}

absl::Status CheckUNet(const UNetConfig& c, const TensorIndex& index, const std::string& label, const std::string& source) {
  const std::string p = "model.diffusion_model.";
  const std::string from = absl::StrCat(" (", source, ")");
  const int mc = c.model_channels;
  if (auto s = Expect(index, p + "input_blocks.0.0.weight", {mc, c.in_channels, 3, 3},
                      absl::StrCat("unet model_channels ", mc, ", in_channels ", c.in_channels, from), label);
      !s.ok()) return s;
  if (auto s = Expect(index, p + "time_embed.0.weight", {4 * mc, mc}, absl::StrCat("unet model_channels ", mc, from), label);
      !s.ok()) return s;
  if (auto s = Expect(index, p + "out.2.weight", {c.out_channels, mc, 3, 3},
                      absl::StrCat("unet out_channels ", c.out_channels, from), label);
      !s.ok()) return s;
  int block = 1;
  int ds = 1;
  int ch = mc;
  for (std::size_t level = 0; level < c.channel_mult.size(); ++level) {
    ch = mc * c.channel_mult[level];
    const bool attention =
        std::find(c.attention_resolutions.begin(), c.attention_resolutions.end(), ds) != c.attention_resolutions.end();
    const std::string setting = absl::StrCat("unet channel_mult [", absl::StrJoin(c.channel_mult, ", "),
                                             "], num_res_blocks ", c.num_res_blocks, ", attention_resolutions [",
                                             absl::StrJoin(c.attention_resolutions, ", "), "]", from);
    for (int r = 0; r < c.num_res_blocks; ++r, ++block) {
      const std::string b = absl::StrCat(p, "input_blocks.", block, ".");
      if (auto s = Expect(index, b + "0.out_layers.3.weight", {ch, ch, 3, 3}, setting, label); !s.ok()) return s;
      if (attention) {
        if (c.num_head_channels == -1 && (c.num_heads <= 0 || ch % c.num_heads != 0)) {
          return absl::InvalidArgumentError(absl::StrCat("'", label, "': unet num_heads ", c.num_heads,
                                                         " does not divide the ", ch, " channels of input block ", block, from));
        }
        const std::string last = absl::StrCat(b, "1.transformer_blocks.", c.transformer_depth - 1, ".attn2.to_k.weight");
        if (auto s = Expect(index, last, {ch, c.context_dim},
                            absl::StrCat("unet transformer_depth ", c.transformer_depth, ", context_dim ",
                                         c.context_dim, from), label);
            !s.ok()) return s;
        if (index.Find(absl::StrCat(b, "1.transformer_blocks.", c.transformer_depth, ".attn2.to_k.weight")) != nullptr) {
          return absl::InvalidArgumentError(absl::StrCat("'", label, "': input block ", block, " has more than ",
                                                         c.transformer_depth, " transformer blocks (transformer_depth", from, ")"));
        }
      } else if (index.Find(b + "1.proj_in.weight") != nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("'", label, "': ", b, "1 is an attention block, but ", setting,
                                                       " puts none there"));
      }
    }
    if (level + 1 < c.channel_mult.size()) {
      if (auto s = Expect(index, absl::StrCat(p, "input_blocks.", block, ".0.op.weight"), {ch, ch, 3, 3},
                          absl::StrCat("unet channel_mult", from), label);
          !s.ok()) return s;
      ++block;
      ds *= 2;
    }
  }
  if (index.Find(absl::StrCat(p, "input_blocks.", block, ".0.in_layers.0.weight")) != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "': the file has more input blocks than unet channel_mult [",
                                                   absl::StrJoin(c.channel_mult, ", "), "] and num_res_blocks ",
                                                   c.num_res_blocks, " give", from));
  }
  return Expect(index, p + "middle_block.1.transformer_blocks.0.attn2.to_k.weight", {ch, c.context_dim},
                absl::StrCat("unet context_dim ", c.context_dim, from), label);
}

absl::Status CheckVae(const VaeConfig& c, const TensorIndex& index, const std::string& p, const std::string& label,
                      const std::string& source) {
  const std::string from = absl::StrCat(" (", source, ")");
  const int z2 = c.double_z ? 2 * c.z_channels : c.z_channels;
  if (auto s = Expect(index, p + "encoder.conv_in.weight", {c.ch, c.in_channels, 3, 3}, absl::StrCat("vae ch ", c.ch, from), label);
      !s.ok()) return s;
  if (auto s = Expect(index, p + "encoder.conv_out.weight", {z2, -1, 3, 3}, absl::StrCat("vae z_channels ", c.z_channels, from), label);
      !s.ok()) return s;
  if (auto s = Expect(index, p + "quant_conv.weight", {2 * c.embed_dim, z2, 1, 1}, absl::StrCat("vae embed_dim ", c.embed_dim, from), label);
      !s.ok()) return s;
  if (auto s = Expect(index, p + "post_quant_conv.weight", {c.z_channels, c.embed_dim, 1, 1},
                      absl::StrCat("vae embed_dim ", c.embed_dim, from), label);
      !s.ok()) return s;
  for (std::size_t level = 0; level < c.ch_mult.size(); ++level) {
    for (int r = 0; r < c.num_res_blocks; ++r) {
      const int ch = c.ch * c.ch_mult[level];
      if (auto s = Expect(index, absl::StrCat(p, "encoder.down.", level, ".block.", r, ".conv2.weight"), {ch, ch, 3, 3},
                          absl::StrCat("vae ch_mult [", absl::StrJoin(c.ch_mult, ", "), "], num_res_blocks ",
                                       c.num_res_blocks, from), label);
          !s.ok()) return s;
    }
  }
  if (index.Find(absl::StrCat(p, "encoder.down.", c.ch_mult.size(), ".block.0.conv1.weight")) != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "': the VAE has more levels than vae ch_mult [",
                                                   absl::StrJoin(c.ch_mult, ", "), "]", from));
  }
  return Expect(index, p + "decoder.conv_out.weight", {c.out_ch, c.ch * (c.ch_mult.empty() ? 1 : c.ch_mult[0]), 3, 3},
                absl::StrCat("vae out_ch ", c.out_ch, from), label);
}

absl::Status CheckClip(const ClipTextConfig& c, const TensorIndex& index, const std::string& p, const std::string& label,
                       const std::string& source) {
  const std::string from = absl::StrCat(" (", source, ")");
  if (auto s = Expect(index, p + "embeddings.token_embedding.weight", {c.vocab_size, c.hidden_size},
                      absl::StrCat("clip vocab_size ", c.vocab_size, ", hidden_size ", c.hidden_size, from), label);
      !s.ok()) return s;
  if (auto s = Expect(index, p + "embeddings.position_embedding.weight", {c.max_position_embeddings, c.hidden_size},
                      absl::StrCat("clip max_position_embeddings ", c.max_position_embeddings, from), label);
      !s.ok()) return s;
  const std::string last = absl::StrCat(p, "encoder.layers.", c.num_hidden_layers - 1, ".mlp.fc1.weight");
  if (auto s = Expect(index, last, {c.intermediate_size, c.hidden_size},
                      absl::StrCat("clip num_hidden_layers ", c.num_hidden_layers, ", intermediate_size ",
                                   c.intermediate_size, from), label);
      !s.ok()) return s;
  if (index.Find(absl::StrCat(p, "encoder.layers.", c.num_hidden_layers, ".mlp.fc1.weight")) != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "': the text encoder has more than ",
                                                   c.num_hidden_layers, " layers (clip num_hidden_layers", from, ")"));
  }
  if (c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "': clip num_attention_heads ", c.num_attention_heads,
                                                   " does not divide hidden_size ", c.hidden_size, from));
  }
  return Expect(index, p + "final_layer_norm.weight", {c.hidden_size}, absl::StrCat("clip hidden_size", from), label);
}

}  // namespace

absl::StatusOr<Sd1Config> ParseLdmYaml(const std::string& text, const std::string& label, Sd1Config c) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config '", label, "' is not valid YAML: ", e.what()));
  }
  const YAML::Node params = root["model"]["params"];
  if (!params || !params.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat("config '", label, "' has no model.params (LDM config format)"));
  }
  const std::string w = absl::StrCat("config '", label, "': model.params");
  ATELIER_YAML_READ(params, "linear_start", c.schedule.linear_start, w);
  ATELIER_YAML_READ(params, "linear_end", c.schedule.linear_end, w);
  ATELIER_YAML_READ(params, "timesteps", c.schedule.timesteps, w);
  ATELIER_YAML_READ(params, "scale_factor", c.scale_factor, w);
  if (const YAML::Node u = params["unet_config"]["params"]; u && u.IsMap()) {
    const std::string uw = w + ".unet_config.params";
    ATELIER_YAML_READ(u, "in_channels", c.unet.in_channels, uw);
    ATELIER_YAML_READ(u, "out_channels", c.unet.out_channels, uw);
    ATELIER_YAML_READ(u, "model_channels", c.unet.model_channels, uw);
    ATELIER_YAML_READ(u, "attention_resolutions", c.unet.attention_resolutions, uw);
    ATELIER_YAML_READ(u, "num_res_blocks", c.unet.num_res_blocks, uw);
    ATELIER_YAML_READ(u, "channel_mult", c.unet.channel_mult, uw);
    ATELIER_YAML_READ(u, "num_heads", c.unet.num_heads, uw);
    ATELIER_YAML_READ(u, "num_head_channels", c.unet.num_head_channels, uw);
    ATELIER_YAML_READ(u, "transformer_depth", c.unet.transformer_depth, uw);
    ATELIER_YAML_READ(u, "context_dim", c.unet.context_dim, uw);
    ATELIER_YAML_READ(u, "use_linear_in_transformer", c.unet.use_linear_in_transformer, uw);
  }
  if (const YAML::Node f = params["first_stage_config"]["params"]; f && f.IsMap()) {
    const std::string fw = w + ".first_stage_config.params";
    ATELIER_YAML_READ(f, "embed_dim", c.vae.embed_dim, fw);
    if (const YAML::Node d = f["ddconfig"]; d && d.IsMap()) {
      const std::string dw = fw + ".ddconfig";
      ATELIER_YAML_READ(d, "double_z", c.vae.double_z, dw);
      ATELIER_YAML_READ(d, "z_channels", c.vae.z_channels, dw);
      ATELIER_YAML_READ(d, "resolution", c.vae.resolution, dw);
      ATELIER_YAML_READ(d, "in_channels", c.vae.in_channels, dw);
      ATELIER_YAML_READ(d, "out_ch", c.vae.out_ch, dw);
      ATELIER_YAML_READ(d, "ch", c.vae.ch, dw);
      ATELIER_YAML_READ(d, "ch_mult", c.vae.ch_mult, dw);
      ATELIER_YAML_READ(d, "num_res_blocks", c.vae.num_res_blocks, dw);
      ATELIER_YAML_READ(d, "attn_resolutions", c.vae.attn_resolutions, dw);
    }
  }
  if (const YAML::Node t = params["cond_stage_config"]["params"]; t && t.IsMap()) {
    const std::string tw = w + ".cond_stage_config.params";
    ATELIER_YAML_READ(t, "hidden_size", c.clip.hidden_size, tw);
    ATELIER_YAML_READ(t, "num_hidden_layers", c.clip.num_hidden_layers, tw);
    ATELIER_YAML_READ(t, "num_attention_heads", c.clip.num_attention_heads, tw);
    ATELIER_YAML_READ(t, "intermediate_size", c.clip.intermediate_size, tw);
    ATELIER_YAML_READ(t, "vocab_size", c.clip.vocab_size, tw);
    ATELIER_YAML_READ(t, "max_position_embeddings", c.clip.max_position_embeddings, tw);
    ATELIER_YAML_READ(t, "hidden_act", c.clip.hidden_act, tw);
    ATELIER_YAML_READ(t, "layer_norm_eps", c.clip.layer_norm_eps, tw);
  }
  c.source = absl::StrCat("yaml ", label);
  return c;
}

absl::Status CheckVaeConfig(const VaeConfig& config, const TensorIndex& index, const std::string& prefix,
                            const std::string& label, const std::string& source) {
  return CheckVae(config, index, prefix, label, source);
}

absl::Status CheckSd1Config(const Sd1Config& config, const TensorIndex& index, const std::string& label) {
  if (auto s = CheckUNet(config.unet, index, label, config.source); !s.ok()) return s;
  if (index.Find("first_stage_model.encoder.conv_in.weight") != nullptr) {
    if (auto s = CheckVae(config.vae, index, "first_stage_model.", label, config.source); !s.ok()) return s;
  }
  for (const char* p : {"cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."}) {
    if (index.Find(absl::StrCat(p, "embeddings.token_embedding.weight")) != nullptr) {
      if (auto s = CheckClip(config.clip, index, p, label, config.source); !s.ok()) return s;
      break;
    }
  }
  if (const TensorInfo* a = index.Find("alphas_cumprod"); a != nullptr &&
                                                           (a->shape.size() != 1 || a->shape[0] != config.schedule.timesteps)) {
    return absl::InvalidArgumentError(absl::StrCat("'", label, "': schedule timesteps ", config.schedule.timesteps,
                                                   " (", config.source, ") but alphas_cumprod has shape ", Shape(a->shape)));
  }
  return absl::OkStatus();
}

absl::StatusOr<Sd1Config> ResolveSd1Config(const fs::path& path, const TensorIndex& index, const Layout& layout) {
  Sd1Config config;
  config.unet.in_channels = layout.unet_in_channels > 0 ? layout.unet_in_channels : 4;
  const std::string label = path.filename().string();
  fs::path yaml = path;
  yaml.replace_extension(".yaml");
  std::error_code ec;
  if (fs::is_regular_file(yaml, ec)) {
    std::ifstream in(yaml);
    std::stringstream text;
    text << in.rdbuf();
    auto parsed = ParseLdmYaml(text.str(), yaml.filename().string(), config);
    if (!parsed.ok()) return parsed.status();
    config = *std::move(parsed);
  } else {
    // Hyper-parameters recorded by the file's writer (e.g. the text encoder's head count).
    bool any = false;
    auto take = [&](const char* key, int& field) {
      const auto it = index.metadata.find(key);
      int value;
      if (it != index.metadata.end() && absl::SimpleAtoi(it->second, &value)) {
        field = value;
        any = true;
      }
    };
    take("num_attention_heads", config.clip.num_attention_heads);
    take("num_heads", config.unet.num_heads);
    if (any) config.source = "SD1.x defaults and __metadata__";
  }
  if (auto it = index.metadata.find("modelspec.resolution"); it != index.metadata.end()) {
    // "64x64"; anything else is ignored with the 512 default (metadata is advisory, the weights are what count).
    const std::vector<std::string> parts = absl::StrSplit(absl::AsciiStrToLower(it->second), 'x');
    int w = 0, h = 0;
    if (parts.size() == 2 && absl::SimpleAtoi(parts[0], &w) && absl::SimpleAtoi(parts[1], &h) && w >= 64 &&
        h >= 64 && w <= 4096 && h <= 4096 && w % 8 == 0 && h % 8 == 0) {
      config.native_width = w;
      config.native_height = h;
    }
  }
  if (auto s = CheckSd1Config(config, index, label); !s.ok()) return s;
  return config;
}

}  // namespace atelier::engine
