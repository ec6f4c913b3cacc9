// --metrics-listen HOST:PORT: a plain HTTP endpoint serving GET /metrics in Prometheus' text format (cpp-httplib, on
// its own thread). It shows counts and timings only (no prompts, tokens or paths); anything but GET /metrics is 404.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace atelier::server {

class MetricsEndpoint {
 public:
  // `render` makes the page; called on the endpoint's threads. Port 0 picks a free port.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& listen,
                                                                std::function<std::string()> render);
  ~MetricsEndpoint();  // stops serving and joins the thread

  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace atelier::server
