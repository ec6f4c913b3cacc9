// Model configurations of fixture cases (their case.json "config") and the released checkpoints' manifests, shared
// by the model tests.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/models/sd_config.h"
#include "fixture_case.h"

namespace atelier::testing {

using Shapes = std::map<std::string, std::vector<std::int64_t>>;

// Names and shapes of ../shared/manifests/<file> whose names start with `prefix`, with the prefix removed.
Shapes ManifestShapes(const std::string& file, const std::string& prefix);

// A UNet configuration in LDM's UNetModel parameter names (a case's "config", or its "config.unet").
engine::UNetConfig UNetConfigOf(const nlohmann::json& j);

// A vae-tiny style case: config.ddconfig and config.embed_dim.
engine::VaeConfig VaeConfigOf(const FixtureCase& c);

}  // namespace atelier::testing
