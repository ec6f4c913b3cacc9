// A pickle walker that never runs anything: it steps through the opcodes of a Python pickle and builds inert
// values. Only what a PyTorch state dict needs is understood (OrderedDict, torch._utils._rebuild_tensor_v2 and
// friends, storage types, a few numpy/codecs reconstructors); any other class or function becomes an inert
// placeholder, and calling something from a module that can run code (os, posix, subprocess, builtins, ...) is
// refused with an error naming it. No libtorch here: tensors come back as descriptors (storage key, dtype,
// offset, sizes, strides) for the caller to materialise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/io/safetensors.h"

namespace atelier::engine::pickle {

struct Value;
// The root of an unpickled document. It owns every value the run created (an arena); the links between values
// are plain pointers, so a pickle that builds reference cycles cannot leak them. Values live as long as the root.
using ValuePtr = std::shared_ptr<const Value>;

// A storage a tensor views: found through a persistent id ("storage", <type>, key, location, numel[, view]).
struct StorageRef {
  std::string key;          // entry name in the archive (zip: <prefix>/data/<key>)
  DType dtype = DType::kF32;
  std::int64_t numel = 0;   // elements
};

// torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...).
struct TensorRef {
  std::shared_ptr<StorageRef> storage;
  std::int64_t offset = 0;
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> strides;
};

enum class Kind {
  kNone,
  kBool,
  kInt,     // fits in int64
  kBigInt,  // little-endian two's complement bytes in `text`
  kFloat,
  kString,  // UTF-8
  kBytes,
  kTuple,
  kList,
  kDict,
  kGlobal,  // a reference to module.name (never imported)
  kObject,  // an inert placeholder for an instance of `text` (module.name)
  kStorage,
  kTensor,
};

struct Value {
  Kind kind = Kind::kNone;
  bool boolean = false;
  std::int64_t integer = 0;
  double real = 0;
  std::string text;  // string, bytes, big int, or "module.name" of a global / placeholder
  std::vector<const Value*> items;                             // tuple, list, or a placeholder's call arguments
  std::vector<std::pair<const Value*, const Value*>> entries;  // dict, in insertion order
  std::shared_ptr<StorageRef> storage;
  std::shared_ptr<TensorRef> tensor;
  // For dicts: position of each string key in `entries` (keeps SETITEMS linear on large state dicts).
  std::unordered_map<std::string, std::size_t> key_index;

  // The value under a string key of a dict, or nullptr.
  const Value* Get(absl::string_view key) const;
};

// Short description for error messages: "dict(3)", "tensor[4, 4]", "placeholder __main__.Callback", ...
std::string Describe(const Value& value);

// Resolves a persistent id (BINPERSID / PERSID) to a storage; torch checkpoints describe storages with it.
using PersistentLoader = std::function<absl::StatusOr<std::shared_ptr<StorageRef>>(const Value& pid)>;

struct Limits {
  std::size_t max_stack = 1 << 22;       // values on the stack at once
  std::size_t max_memo = 1 << 24;        // memo entries
  std::size_t max_container = 1 << 24;   // items in one container
};

// Runs the pickle that starts at `data`. `*consumed` (may be null) receives its length up to and including STOP,
// so several pickles in a row (PyTorch's legacy format) can be read one after another. `label` names the source
// in errors. Errors are INVALID_ARGUMENT (malformed or unsupported) or PERMISSION_DENIED (code execution refused).
absl::StatusOr<ValuePtr> Unpickle(absl::string_view data, absl::string_view label, const PersistentLoader& persistent,
                                  std::size_t* consumed = nullptr, const Limits& limits = Limits());

// The torch storage classes ("FloatStorage", "HalfStorage", ...) as dtypes; false for anything else.
bool StorageDType(absl::string_view global, DType* dtype);

}  // namespace atelier::engine::pickle
