// `atelierd --http-listen ADDR`: atelier-web (WebUI's HTTP API and the live page) run as a child of the daemon,
// talking to it over its gRPC address like any other client. Its stdout goes to the daemon's stderr, so the
// daemon's one stdout line stays the only one.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace atelier {

class WebGatewayChild {
 public:
  // Starts atelier-web (found beside atelierd, else on PATH) listening on `listen` for `daemon_address`.
  static absl::StatusOr<WebGatewayChild> Start(const std::string& listen, const std::string& daemon_address);
  WebGatewayChild(WebGatewayChild&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }
  WebGatewayChild& operator=(WebGatewayChild&&) = delete;
  // Stops it (SIGTERM, then waits).
  ~WebGatewayChild();

  pid_t pid() const { return pid_; }

 private:
  explicit WebGatewayChild(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
};

}  // namespace atelier
