#include "engine/io/weight_arena.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"

namespace atelier::engine {
namespace {
constexpr std::size_t kAlignment = 64;
}  // namespace

absl::StatusOr<std::shared_ptr<WeightArena>> WeightArena::Create(std::size_t bytes) {
  const std::size_t size = std::max<std::size_t>(bytes, kAlignment);
  void* data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", size / (1 << 20), " MiB for the model's weights: ", std::strerror(errno)));
  }
  ::madvise(data, size, MADV_HUGEPAGE);  // best effort: fewer, larger page faults
  return std::shared_ptr<WeightArena>(new WeightArena(data, size));
}

WeightArena::~WeightArena() { ::munmap(data_, size_); }

std::size_t WeightArena::Footprint(at::IntArrayRef sizes, at::ScalarType dtype) {
  std::size_t bytes = c10::elementSize(dtype);
  for (auto s : sizes) bytes *= static_cast<std::size_t>(s);
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

at::Tensor WeightArena::Allocate(at::IntArrayRef sizes, at::ScalarType dtype) {
  const std::size_t bytes = Footprint(sizes, dtype);
  if (bytes > size_ - used_) return at::Tensor();
  void* at_offset = static_cast<char*>(data_) + used_;
  used_ += bytes;
  auto keep_alive = shared_from_this();
  return at::from_blob(at_offset, sizes, [keep_alive](void*) mutable { keep_alive.reset(); },
                       at::TensorOptions().dtype(dtype));
}

}  // namespace atelier::engine
