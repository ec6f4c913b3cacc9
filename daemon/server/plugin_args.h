// alwayson_scripts values as the JSON text plugins receive, keyed by lower-case plugin name.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "atelier/v1/generation.pb.h"

namespace atelier::server {

absl::StatusOr<std::map<std::string, std::string>> PluginArgsJson(const v1::GenerateRequest& request);

}  // namespace atelier::server
