// Model configurations of fixture cases (their case.json "config"), shared by the model tests.
#pragma once

#include "engine/sd_config.h"
#include "fixture_case.h"

namespace atelier::testing {

// A vae-tiny style case: config.ddconfig and config.embed_dim.
engine::VaeConfig VaeConfigOf(const FixtureCase& c);

}  // namespace atelier::testing
