#include "engine/models/cpu_allocator.h"

#include <sys/mman.h>

#include <cstddef>
#include <list>
#include <map>
#include <mutex>
#include <unordered_map>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

namespace atelier::engine {
namespace {

constexpr std::size_t kMinCachedBytes = 256 * 1024;

// Sizes round up to 64 KiB (4 MiB and more: to 1/16 of their power of two), so a step's slightly different shapes
// share blocks; a cached block serves a request at most 1/8 smaller than itself.
std::size_t RoundedSize(std::size_t n) {
  std::size_t granule = 64 * 1024;
  if (n >= (std::size_t{4} << 20)) {
    std::size_t power = std::size_t{1} << 22;
    while (power * 2 <= n) power *= 2;
    granule = power / 16;
  }
  return (n + granule - 1) / granule * granule;
}

// Large blocks come straight from the kernel, never from glibc's heap: glibc raises its mmap threshold (up to
// 32 MiB) each time a mapped block is freed, after which blocks that size live in the heap and stay resident when
// freed. The sampler's released blocks then sat beside the VAE decode's (the job's peak RSS 3.2 GB for bf16 SD 1.5
// at 512x512, weights 2 GB).
void* MapBlock(std::size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TORCH_CHECK(p != MAP_FAILED, "CPU out of memory: tried to allocate ", size >> 20, " MiB");
  return p;
}

void UnmapBlock(void* p, std::size_t size) { ::munmap(p, size); }

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(std::int64_t max_cached) : max_cached_(max_cached) {}

  c10::DataPtr allocate(std::size_t n) const override {
    void* p = const_cast<CachingCpuAllocator*>(this)->Take(n);
    return {p, p, &Delete, c10::Device(c10::DeviceType::CPU)};
  }
  // ideep's engine allocator frees through raw_deallocate, which needs this.
  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }

  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, block] : free_) UnmapBlock(block, size);
    free_.clear();
    order_.clear();
    cached_ = 0;
  }

  CpuCacheStats Stats() {
    std::lock_guard<std::mutex> lock(mu_);
    CpuCacheStats s;
    s.cached_bytes = cached_;
    s.in_use_bytes = in_use_;
    s.hits = hits_;
    s.misses = misses_;
    return s;
  }

  static CachingCpuAllocator* instance;

 private:
  struct FreeBlock {
    std::size_t size;
    void* ptr;
  };

  void* Take(std::size_t n) {
    if (n < kMinCachedBytes) return c10::alloc_cpu(n);
    const std::size_t size = RoundedSize(n);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + size / 8) {
        void* p = it->second;
        const std::size_t got = it->first;
        order_.erase(positions_.at(p));
        positions_.erase(p);
        free_.erase(it);
        cached_ -= static_cast<std::int64_t>(got);
        live_[p] = got;
        in_use_ += static_cast<std::int64_t>(got);
        ++hits_;
        return p;
      }
      ++misses_;
    }
    void* p = MapBlock(size);  // throws c10::Error when out of memory, as the default allocator does
    std::lock_guard<std::mutex> lock(mu_);
    live_[p] = size;
    in_use_ += static_cast<std::int64_t>(size);
    return p;
  }

  void Give(void* p) {
    if (p == nullptr) return;
    std::unique_lock<std::mutex> lock(mu_);
    auto live = live_.find(p);
    if (live == live_.end()) {
      lock.unlock();
      c10::free_cpu(p);  // a small block
      return;
    }
    const std::size_t size = live->second;
    live_.erase(live);
    in_use_ -= static_cast<std::int64_t>(size);
    if (static_cast<std::int64_t>(size) > max_cached_) {
      lock.unlock();
      UnmapBlock(p, size);
      return;
    }
    free_.emplace(size, p);
    order_.push_back({size, p});
    positions_[p] = std::prev(order_.end());
    cached_ += static_cast<std::int64_t>(size);
    // Beyond the cap the oldest free blocks go back to the system.
    while (cached_ > max_cached_ && !order_.empty()) {
      const FreeBlock oldest = order_.front();
      order_.pop_front();
      positions_.erase(oldest.ptr);
      for (auto it = free_.lower_bound(oldest.size); it != free_.end() && it->first == oldest.size; ++it) {
        if (it->second == oldest.ptr) {
          free_.erase(it);
          break;
        }
      }
      cached_ -= static_cast<std::int64_t>(oldest.size);
      UnmapBlock(oldest.ptr, oldest.size);
    }
  }

  static void Delete(void* p) { instance->Give(p); }

  const std::int64_t max_cached_;
  std::mutex mu_;
  std::multimap<std::size_t, void*> free_;  // size -> block
  std::list<FreeBlock> order_;               // free blocks, oldest first
  std::unordered_map<void*, std::list<FreeBlock>::iterator> positions_;
  std::unordered_map<void*, std::size_t> live_;  // large blocks handed out
  std::int64_t cached_ = 0, in_use_ = 0, hits_ = 0, misses_ = 0;
};

CachingCpuAllocator* CachingCpuAllocator::instance = nullptr;
std::once_flag install_once;

}  // namespace

void InstallCachingCpuAllocator(std::int64_t max_cached_bytes) {
  std::call_once(install_once, [max_cached_bytes] {
    // Never destroyed: tensors may be freed during static destruction.
    CachingCpuAllocator::instance = new CachingCpuAllocator(max_cached_bytes);
    c10::SetCPUAllocator(CachingCpuAllocator::instance, /*priority=*/1);
  });
}

void ReleaseCachedCpuMemory() {
  if (CachingCpuAllocator::instance != nullptr) CachingCpuAllocator::instance->Release();
}

CpuCacheStats CachingCpuAllocatorStats() {
  return CachingCpuAllocator::instance != nullptr ? CachingCpuAllocator::instance->Stats() : CpuCacheStats{};
}

}  // namespace atelier::engine
