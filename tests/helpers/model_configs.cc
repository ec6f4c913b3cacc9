#include "model_configs.h"

namespace atelier::testing {

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
