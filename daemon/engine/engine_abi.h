// The engine's binary interface tag. A plugin that links the engine library through the C++ SDK (plugins/sdk) passes
// C++ objects (at::Tensor, the engine's classes) across the library boundary, so it must be built against the same
// Atelier version, libtorch version and C++ standard-library ABI as the daemon that loads it. The SDK compiles this
// tag into the plugin's descriptor (atelier_plugin_descriptor.engine_abi); the host compares it with EngineAbi() and
// refuses a mismatch with both tags in the message. Plugins on the C header alone carry no tag and always load.
#pragma once

#include <torch/version.h>

#include "version.h"

#define ATELIER_ENGINE_ABI_STR_(x) #x
#define ATELIER_ENGINE_ABI_STR(x) ATELIER_ENGINE_ABI_STR_(x)
#define ATELIER_ENGINE_ABI                                                                            \
  "atelier-engine " ATELIER_VERSION_STRING "; libtorch " TORCH_VERSION "; cxx11-abi " ATELIER_ENGINE_ABI_STR( \
      _GLIBCXX_USE_CXX11_ABI)

namespace atelier::engine {

// The tag this engine library was built with.
const char* EngineAbi();

}  // namespace atelier::engine
