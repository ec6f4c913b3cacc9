#include "host/hook_watchdog.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "engine/io/mapped_file_guard.h"

namespace atelier::host {
namespace {

// The innermost hook running now (null when none). Plain atomics: the signal handler reads them.
std::atomic<const char*> g_plugin{nullptr};
std::atomic<const char*> g_hook{nullptr};
std::atomic<long long> g_started_ns{0};
std::atomic<long long> g_reported_ns{0};  // the start time of the call already reported (one report per call)

long long NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void WriteAll(const char* text) {
  size_t left = strlen(text);
  while (left > 0) {
    const ssize_t n = write(STDERR_FILENO, text, left);
    if (n <= 0) return;
    text += n;
    left -= static_cast<size_t>(n);
  }
}

void OnFatalSignal(int signal_number, siginfo_t* info, void*) {
  // Async-signal-safe only: atomics, write(2), mmap(2), raise(3).
  // A checkpoint truncated while mapped: repaired (mapped_file_guard.h), the read goes on.
  if (signal_number == SIGBUS && engine::RepairMappedFileFault(info->si_addr)) return;
  const char* plugin = g_plugin.load();
  const char* hook = g_hook.load();
  if (plugin != nullptr) {
    const char* name = signal_number == SIGSEGV ? "SIGSEGV"
                       : signal_number == SIGBUS ? "SIGBUS"
                       : signal_number == SIGILL ? "SIGILL"
                       : signal_number == SIGFPE ? "SIGFPE"
                                                 : "SIGABRT";
    WriteAll("atelierd: plugin '");
    WriteAll(plugin);
    WriteAll("' crashed (");
    WriteAll(name);
    WriteAll(") in its '");
    WriteAll(hook != nullptr ? hook : "?");
    WriteAll("' hook; the daemon exits for its supervisor to restart it (examples/systemd)\n");
  } else {
    WriteAll(signal_number == SIGSEGV ? "atelierd: fatal SIGSEGV" : signal_number == SIGBUS ? "atelierd: fatal SIGBUS"
             : signal_number == SIGILL ? "atelierd: fatal SIGILL" : signal_number == SIGFPE ? "atelierd: fatal SIGFPE"
                                                                                         : "atelierd: fatal SIGABRT");
    WriteAll(" outside any plugin hook; the daemon exits for its supervisor to restart it\n");
  }
  signal(signal_number, SIG_DFL);
  raise(signal_number);
}

}  // namespace

HookScope::HookScope(const std::string& plugin, const char* hook)
    : previous_plugin_(g_plugin.load()), previous_hook_(g_hook.load()), previous_started_ns_(g_started_ns.load()) {
  g_started_ns.store(NowNs());
  g_hook.store(hook);
  g_plugin.store(plugin.c_str());
}

HookScope::~HookScope() {
  g_plugin.store(previous_plugin_);
  g_hook.store(previous_hook_);
  // The outer hook's clock restarts: the time spent in the inner one was another plugin's.
  g_started_ns.store(previous_plugin_ != nullptr ? NowNs() : previous_started_ns_);
}

void StartHookWatchdog(double timeout_seconds, std::function<void(const HookTimeout&)> on_timeout) {
  static std::once_flag once;
  if (timeout_seconds <= 0) return;
  std::call_once(once, [timeout_seconds, on_timeout = std::move(on_timeout)]() mutable {
    std::thread([timeout_seconds, on_timeout = std::move(on_timeout)] {
      const long long limit_ns = static_cast<long long>(timeout_seconds * 1e9);
      while (true) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        const char* plugin = g_plugin.load();
        const char* hook = g_hook.load();
        const long long started = g_started_ns.load();
        if (plugin == nullptr || started == g_reported_ns.load()) continue;
        const long long ran = NowNs() - started;
        if (ran < limit_ns || g_plugin.load() != plugin) continue;
        g_reported_ns.store(started);
        on_timeout({plugin, hook != nullptr ? hook : "?", ran / 1e9});
      }
    }).detach();
  });
}

void InstallPluginCrashReporter() {
  // Its own stack, so a plugin's stack overflow is reported too.
  static char* alternate = static_cast<char*>(std::malloc(1 << 16));
  stack_t stack{};
  stack.ss_sp = alternate;
  stack.ss_size = 1 << 16;
  sigaltstack(&stack, nullptr);
  struct sigaction action {};
  action.sa_sigaction = OnFatalSignal;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  for (int s : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) sigaction(s, &action, nullptr);
}

}  // namespace atelier::host
