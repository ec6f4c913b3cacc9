#include "server/plugin_args.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "util/user_text.h"

namespace atelier::server {

absl::StatusOr<std::map<std::string, std::string>> PluginArgsJson(const v1::GenerateRequest& request) {
  std::map<std::string, std::string> out;
  for (const auto& [name, value] : request.alwayson_scripts().fields()) {
    std::string json;
    const auto status = google::protobuf::util::MessageToJsonString(value, &json);
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("alwayson_scripts[", Quoted(name), "] cannot be written as JSON: ", status.ToString()));
    }
    out[absl::AsciiStrToLower(name)] = std::move(json);
  }
  return out;
}

}  // namespace atelier::server
