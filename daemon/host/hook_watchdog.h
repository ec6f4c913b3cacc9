// Which plugin hook is running, for the two faults the host cannot turn into an error value: a plugin that hangs and
// one that crashes. A hook call (CallHook) marks itself with a HookScope. The watchdog thread reports a hook that
// has run past --plugin-hook-timeout once (the daemon then fails the job naming the plugin and exits so its
// supervisor restarts it: the stuck thread cannot be stopped). The crash reporter's signal handler names the plugin
// and hook a fatal signal hit before the process dies with that signal.
#pragma once

#include <functional>
#include <string>

namespace atelier::host {

// Marks the executor as inside `plugin`'s `hook` for its lifetime (nests: the outer mark returns on destruction).
// `plugin` must outlive the scope (a Plugin's name); `hook` a string literal.
class HookScope {
 public:
  HookScope(const std::string& plugin, const char* hook);
  ~HookScope();
  HookScope(const HookScope&) = delete;
  HookScope& operator=(const HookScope&) = delete;

 private:
  const char* previous_plugin_;
  const char* previous_hook_;
  long long previous_started_ns_;
};

struct HookTimeout {
  std::string plugin;
  std::string hook;
  double seconds = 0;  // how long it has run
};

// Starts the watchdog (once per process; later calls change nothing). `on_timeout` runs on the watchdog's thread,
// once per hook call that passes `timeout_seconds`.
void StartHookWatchdog(double timeout_seconds, std::function<void(const HookTimeout&)> on_timeout);

// Installs handlers for SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT that, inside a plugin hook, write
// "atelierd: plugin 'NAME' crashed (SIGSEGV) in its 'HOOK' hook" to stderr, then let the signal kill the process.
void InstallPluginCrashReporter();

}  // namespace atelier::host
