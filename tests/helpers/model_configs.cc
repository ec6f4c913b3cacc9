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
