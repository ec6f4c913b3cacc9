// Checkpoints are read through read-only file mappings (MappedFile). If another process truncates a mapped file
// (a copy over it, a failed download restarted), reading a page past the new end raises SIGBUS, which would kill
// the daemon. Every mapping is registered here; a SIGBUS inside one is repaired by mapping a zero page over the
// faulting page (the read goes on, seeing zeros) and counted, so the loader can refuse what it read
// (MappedFileFaults() changed) and the old model keeps serving. A SIGBUS anywhere else stays fatal.
#pragma once

#include <cstddef>
#include <cstdint>

namespace atelier::engine {

// Called by MappedFile. Registering installs the SIGBUS handler (once). At most 1024 mappings are guarded at a
// time; past that a mapping is read unguarded.
void RegisterMappedFile(const void* data, std::size_t size);
void UnregisterMappedFile(const void* data);

// Faults repaired so far, in every mapping; a loader compares it before and after reading.
std::uint64_t MappedFileFaults();

// For a fatal-signal handler installed later (it replaces this one): repairs a SIGBUS at `address` inside a
// registered mapping and returns true, else false. Async-signal-safe.
bool RepairMappedFileFault(void* address);

}  // namespace atelier::engine
