// What the host tells plugins about the daemon, and where model files are.
#pragma once

#include <string>

#include "engine/model_folders.h"

namespace atelier::host {

struct HostEnvironment {
  std::string host_version;  // Atelier's version
  std::string device;        // "cpu" or "cuda:N"
  // Where tensor_file_open looks; nullptr = no models directory (the function then answers NOT_FOUND).
  const engine::ModelFolders* model_folders = nullptr;
};

}  // namespace atelier::host
