#include "model_configs.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "test_support.h"

namespace atelier::testing {

Shapes ManifestShapes(const std::string& file, const std::string& prefix) {
  const auto manifest = nlohmann::json::parse(std::ifstream(FixturesDir().parent_path() / "manifests" / file));
  Shapes out;
  for (const auto& [name, shape] : manifest["tensors"].items()) {
    if (name.rfind(prefix, 0) == 0) out[name.substr(prefix.size())] = shape.get<std::vector<std::int64_t>>();
  }
  return out;
}

engine::UNetConfig UNetConfigOf(const nlohmann::json& j) {
  engine::UNetConfig config;
  config.in_channels = j["in_channels"];
  config.out_channels = j["out_channels"];
  config.model_channels = j["model_channels"];
  config.attention_resolutions = j["attention_resolutions"].get<std::vector<int>>();
  config.num_res_blocks = j["num_res_blocks"];
  config.channel_mult = j["channel_mult"].get<std::vector<int>>();
  config.num_heads = j["num_heads"];
  config.transformer_depth = j["transformer_depth"];
  config.context_dim = j["context_dim"];
  return config;
}

engine::VaeConfig VaeConfigOf(const FixtureCase& c) {
  const auto& dd = c.json["config"]["ddconfig"];
  engine::VaeConfig config;
  config.double_z = dd["double_z"];
  config.z_channels = dd["z_channels"];
  config.resolution = dd["resolution"];
  config.in_channels = dd["in_channels"];
  config.out_ch = dd["out_ch"];
  config.ch = dd["ch"];
  config.ch_mult = dd["ch_mult"].get<std::vector<int>>();
  config.num_res_blocks = dd["num_res_blocks"];
  config.attn_resolutions = dd["attn_resolutions"].get<std::vector<int>>();
  config.embed_dim = c.json["config"]["embed_dim"];
  return config;
}

}  // namespace atelier::testing
