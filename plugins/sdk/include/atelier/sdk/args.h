// Plugin SDK: a plugin's alwayson_scripts value as WebUI extensions receive it. The value under the plugin's name is
// {"args": [...]} (WebUI's script args: positional values, or one dict per unit as sd-webui-controlnet's API takes
// them), or a bare dict, or null when the request has none. Units() gives one JSON object per unit either way.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace atelier::sdk {

class Args {
 public:
  // INVALID_ARGUMENT for text that is not JSON, or an "args" that is not a list.
  static absl::StatusOr<Args> Parse(const char* args_json) {
    Args a;
    a.value_ = nlohmann::json::parse(args_json != nullptr ? args_json : "null", nullptr, /*allow_exceptions=*/false);
    if (a.value_.is_discarded()) return absl::InvalidArgumentError("the arguments are not valid JSON");
    if (a.value_.is_object() && a.value_.contains("args") && !a.value_["args"].is_array()) {
      return absl::InvalidArgumentError("\"args\" must be a list");
    }
    return a;
  }

  // The request gave nothing for this plugin.
  bool empty() const { return value_.is_null() || (list() != nullptr && list()->empty()); }
  const nlohmann::json& value() const { return value_; }

  // The units: each dict of "args" as it is; positional values become one unit with the fields named in `names`
  // (WebUI's positional script args, e.g. {"enabled", "strength"}); a bare dict is one unit.
  std::vector<nlohmann::json> Units(const std::vector<std::string>& names = {}) const {
    std::vector<nlohmann::json> units;
    if (value_.is_null()) return units;
    const nlohmann::json* args = list();
    if (args == nullptr) {
      if (value_.is_object()) units.push_back(value_);
      return units;
    }
    nlohmann::json positional = nlohmann::json::object();
    for (size_t i = 0; i < args->size(); ++i) {
      const nlohmann::json& item = (*args)[i];
      if (item.is_object()) {
        units.push_back(item);
      } else if (i < names.size()) {
        positional[names[i]] = item;
      }
    }
    if (!positional.empty()) units.insert(units.begin(), positional);
    return units;
  }

  // A unit's field of type T, `fallback` when absent; INVALID_ARGUMENT naming the field when of another type.
  template <typename T>
  static absl::StatusOr<T> Field(const nlohmann::json& unit, const std::string& name, T fallback) {
    if (!unit.is_object() || !unit.contains(name) || unit[name].is_null()) return fallback;
    const nlohmann::json& v = unit[name];
    const bool ok = std::is_same_v<T, bool>          ? v.is_boolean()
                    : std::is_arithmetic_v<T>         ? v.is_number()
                    : std::is_same_v<T, std::string> ? v.is_string()
                                                     : true;
    if (!ok) return absl::InvalidArgumentError(absl::StrCat(name, " has the wrong type (", v.type_name(), ")"));
    return v.get<T>();
  }

 private:
  const nlohmann::json* list() const {
    return value_.is_object() && value_.contains("args") ? &value_["args"] : nullptr;
  }
  nlohmann::json value_;
};

}  // namespace atelier::sdk
