// The host's definitions of the ABI's opaque handles. Internal to the host layer.
#pragma once

#include <memory>
#include <string>

#include "atelier/plugin.h"
#include "engine/safetensors.h"
#include "host/job_sink.h"

// One per (job, participating plugin): job-scoped host functions know which plugin calls them.
struct atelier_job {
  atelier::host::JobSink* sink = nullptr;
  std::string plugin_name;
};

struct atelier_tensor_file {
  std::shared_ptr<const atelier::engine::SafetensorsFile> file;
};
