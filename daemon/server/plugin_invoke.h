// Plugins.Invoke as a job: the request checked and kept with the job when it is admitted, and run on the executor
// through the plugin's invoke entry with the job's context as its sink.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "atelier/v1/plugins.pb.h"
#include "host/plugin_registry.h"
#include "server/job.h"
#include "server/job_context.h"

namespace atelier::server {

struct PreparedInvoke final : PreparedJob {
  std::string plugin, method, args_json;
};

// NOT_FOUND for an unknown plugin, FAILED_PRECONDITION for one without invoke, INVALID_ARGUMENT for arguments
// that are not JSON or an empty method.
absl::StatusOr<std::shared_ptr<const PreparedInvoke>> PrepareInvoke(const v1::InvokeRequest& request,
                                                                    const host::PluginRegistry& plugins);

// Runs the job when it is an invoke (true), leaving its status in `status`; false for any other job.
bool RunIfInvoke(JobContext& context, const host::PluginRegistry& plugins, absl::Status& status);

}  // namespace atelier::server
