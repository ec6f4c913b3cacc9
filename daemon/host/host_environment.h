// What the host tells plugins about the daemon, and where model files are.
#pragma once

#include <string>

#include "engine/engine_abi.h"
#include "engine/io/model_folders.h"

namespace atelier::host {

struct HostEnvironment {
  std::string host_version;  // Atelier's version
  std::string device;        // "cpu" or "cuda:N"
  // Where tensor_file_open looks; nullptr = no models directory (the function then answers NOT_FOUND).
  const engine::ModelFolders* model_folders = nullptr;
  std::string compute_dtype = "float32";  // the UNet's: "float32", "bfloat16", "float16"
  // The engine ABI SDK plugins must have been built against (engine/engine_abi.h).
  std::string engine_abi = engine::EngineAbi();
};

}  // namespace atelier::host
