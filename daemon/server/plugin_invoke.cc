#include "server/plugin_invoke.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "host/job_hooks.h"
#include "util/user_text.h"

namespace atelier::server {

absl::StatusOr<std::shared_ptr<const PreparedInvoke>> PrepareInvoke(const v1::InvokeRequest& request,
                                                                    const host::PluginRegistry& plugins) {
  const host::Plugin* plugin = plugins.Find(request.plugin());
  std::vector<std::string> invokable;
  for (const auto& p : plugins.plugins()) {
    if (p->descriptor().invoke != nullptr) invokable.push_back(p->name());
  }
  const std::string choices = invokable.empty() ? "none" : absl::StrJoin(invokable, ", ");
  if (plugin == nullptr) {
    return absl::NotFoundError(absl::StrCat("plugin: no plugin ", Quoted(request.plugin()),
                                            " (plugins with an invoke entry: ", choices, ")"));
  }
  if (plugin->descriptor().invoke == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("plugin '", plugin->name(),
                                                      "' works only inside a generation (plugins with an invoke "
                                                      "entry: ", choices, ")"));
  }
  if (request.method().empty() || request.method().size() > 64) {
    return absl::InvalidArgumentError("method: name what the plugin should do (1..64 characters)");
  }
  if (!request.args_json().empty() && !nlohmann::json::accept(request.args_json())) {
    return absl::InvalidArgumentError("args_json: not a JSON value");
  }
  auto prepared = std::make_shared<PreparedInvoke>();
  prepared->plugin = plugin->name();
  prepared->method = request.method();
  prepared->args_json = request.args_json().empty() ? "null" : request.args_json();
  return prepared;
}

bool RunIfInvoke(JobContext& context, const host::PluginRegistry& plugins, absl::Status& status) {
  const auto* invoke = dynamic_cast<const PreparedInvoke*>(context.prepared());
  if (invoke == nullptr) return false;
  auto result = host::InvokePlugin(plugins, invoke->plugin, invoke->method, invoke->args_json, &context);
  if (result.ok()) {
    context.set_invoke_result(*std::move(result));
    status = context.ShouldStop() ? absl::CancelledError("cancelled") : absl::OkStatus();
  } else {
    status = result.status();
  }
  return true;
}

}  // namespace atelier::server
