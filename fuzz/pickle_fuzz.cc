// Fuzzes the pickle walker with arbitrary bytes, resolving every persistent id to a storage as a checkpoint
// reader would. It must return a value or a status: never crash, loop, or grow without bound.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "engine/io/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace atelier::engine::pickle;
  Limits limits;
  limits.max_stack = 1 << 16;
  limits.max_memo = 1 << 16;
  limits.max_container = 1 << 16;
  const PersistentLoader loader = [](const Value&) -> absl::StatusOr<std::shared_ptr<StorageRef>> {
    auto storage = std::make_shared<StorageRef>();
    storage->key = "0";
    storage->numel = 16;
    return storage;
  };
  size_t consumed = 0;
  auto value = Unpickle(absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz.pkl", loader, &consumed,
                        limits);
  if (value.ok()) {
    if (consumed > size) __builtin_trap();
    (void)Describe(**value);
  }
  return 0;
}
