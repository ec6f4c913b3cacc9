// One large anonymous memory block for a model's converted weights, advised for transparent huge pages. Touching
// fresh memory page by page costs ~1 s per GB on these VMs (4 KiB zero-fill faults); with 2 MiB pages the same
// conversion is ~5x faster (measured in bench/load_bench.cc). Tensors view slices of it and keep it alive.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace atelier::engine {

class WeightArena : public std::enable_shared_from_this<WeightArena> {
 public:
  static absl::StatusOr<std::shared_ptr<WeightArena>> Create(std::size_t bytes);
  ~WeightArena();
  WeightArena(const WeightArena&) = delete;
  WeightArena& operator=(const WeightArena&) = delete;

  // A tensor of `sizes`/`dtype` at the next free, 64-byte aligned offset; it keeps the arena alive.
  // nullopt-like failure (undefined tensor) when the arena is full.
  at::Tensor Allocate(at::IntArrayRef sizes, at::ScalarType dtype);
  std::size_t size() const { return size_; }
  std::size_t used() const { return used_; }

  // Bytes Allocate() will take for a tensor (its size rounded up to the alignment).
  static std::size_t Footprint(at::IntArrayRef sizes, at::ScalarType dtype);

 private:
  WeightArena(void* data, std::size_t size) : data_(data), size_(size) {}
  void* data_;
  std::size_t size_;
  std::size_t used_ = 0;
};

}  // namespace atelier::engine
