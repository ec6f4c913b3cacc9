#include "main/web_gateway_child.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace atelier {

absl::StatusOr<WebGatewayChild> WebGatewayChild::Start(const std::string& listen, const std::string& daemon_address) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path beside = fs::canonical("/proc/self/exe", ec).parent_path() / "atelier-web";
  const std::string program = fs::exists(beside, ec) ? beside.string() : "atelier-web";
  std::vector<std::string> args = {program, "--listen", listen, "--daemon", daemon_address};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_adddup2(&files, STDERR_FILENO, STDOUT_FILENO);
  // The daemon blocks SIGINT / SIGTERM to wait for them; the child starts with them unblocked.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  const int error = posix_spawnp(&pid, program.c_str(), &files, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attr);
  if (error != 0) {
    return absl::NotFoundError(absl::StrCat("--http-listen: cannot start ", program, ": ", std::strerror(error),
                                            " (build or install atelier-web beside atelierd)"));
  }
  return WebGatewayChild(pid);
}

WebGatewayChild::~WebGatewayChild() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace atelier
