#include "engine/io/mapped_file_guard.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

namespace atelier::engine {
namespace {

constexpr int kSlots = 1024;
std::atomic<std::uintptr_t> g_start[kSlots];
std::atomic<std::size_t> g_size[kSlots];
std::atomic<std::uint64_t> g_faults{0};
struct sigaction g_previous {};

void OnBusError(int signal_number, siginfo_t* info, void* context) {
  if (RepairMappedFileFault(info->si_addr)) return;  // the faulting read is retried and sees zeros
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(signal_number, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN && g_previous.sa_handler != nullptr) {
    g_previous.sa_handler(signal_number);
    return;
  }
  signal(signal_number, SIG_DFL);
  raise(signal_number);
}

void InstallHandler() {
  struct sigaction action {};
  action.sa_sigaction = OnBusError;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  sigaction(SIGBUS, &action, &g_previous);
}

}  // namespace

void RegisterMappedFile(const void* data, std::size_t size) {
  static std::once_flag once;
  std::call_once(once, InstallHandler);
  if (data == nullptr || size == 0) return;
  for (int i = 0; i < kSlots; ++i) {
    std::uintptr_t expected = 0;
    g_size[i].store(size);  // before the start is published: a reader that sees the start sees a size
    if (g_start[i].compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(data))) return;
  }
}

void UnregisterMappedFile(const void* data) {
  for (int i = 0; i < kSlots; ++i) {
    std::uintptr_t expected = reinterpret_cast<std::uintptr_t>(data);
    if (expected != 0 && g_start[i].compare_exchange_strong(expected, 0)) return;
  }
}

std::uint64_t MappedFileFaults() { return g_faults.load(); }

bool RepairMappedFileFault(void* address) {
  const auto at = reinterpret_cast<std::uintptr_t>(address);
  for (int i = 0; i < kSlots; ++i) {
    const std::uintptr_t start = g_start[i].load();
    if (start == 0 || at < start || at >= start + g_size[i].load()) continue;
    const auto page_size = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
    void* page = reinterpret_cast<void*>(at & ~(page_size - 1));
    if (mmap(page, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) return false;
    g_faults.fetch_add(1);
    return true;
  }
  return false;
}

}  // namespace atelier::engine
