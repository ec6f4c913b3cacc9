// A caching allocator for libtorch's CPU tensors. glibc hands every large block (an activation, an im2col or
// attention buffer) back to the kernel on free and takes fresh zeroed pages on the next malloc, so each UNet step
// used to fault in all its activations again: 20-25% of a float32 step at 256x256 went to clear_page. Large
// blocks are kept on free lists by size instead and reused by the next step, as PyTorch's CUDA allocator does.
// No libtorch types in this header.
#pragma once

#include <cstdint>

namespace atelier::engine {

struct CpuCacheStats {
  std::int64_t cached_bytes = 0;     // free blocks held for reuse
  std::int64_t in_use_bytes = 0;     // live blocks this allocator handed out (large ones only)
  std::int64_t hits = 0, misses = 0;
};

// Makes libtorch's CPU allocations of at least 256 KiB go through the cache, holding at most `max_cached_bytes`
// of free blocks (the oldest are freed first beyond that). Idempotent; call at start-up before model code runs.
// Tensors allocated before keep their own deleters.
void InstallCachingCpuAllocator(std::int64_t max_cached_bytes);

// Frees every cached block (between jobs, so an idle daemon's RSS is its weights).
void ReleaseCachedCpuMemory();

CpuCacheStats CachingCpuAllocatorStats();

}  // namespace atelier::engine
