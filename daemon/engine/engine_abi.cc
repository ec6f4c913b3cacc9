#include "engine/engine_abi.h"

namespace atelier::engine {

const char* EngineAbi() { return ATELIER_ENGINE_ABI; }

}  // namespace atelier::engine
