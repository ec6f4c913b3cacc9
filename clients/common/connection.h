// How the command line client reaches the daemon: address(es), bearer token, TLS, message sizes. Flags fall back
// to environment variables (ATELIER_SERVER, ATELIER_TOKEN, ATELIER_TLS_CA, ATELIER_TLS_CERT, ATELIER_TLS_KEY).
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace atelier::client {

struct ConnectionOptions {
  // host:port; several comma-separated addresses are balanced by gRPC's own round_robin policy (one daemon per
  // address; every call of one command goes to one channel, so Watch and Cancel of a job need --server naming
  // the daemon that owns it, which `atelier jobs` shows).
  std::string server;
  std::string token;      // sent as "authorization: Bearer TOKEN" on every call
  std::string tls_ca;     // PEM roots the daemon's certificate must chain to; TLS when set (or with tls_cert)
  std::string tls_cert;   // PEM client certificate (mutual TLS)
  std::string tls_key;    // its key
  std::string instance;   // sent as "atelier-instance: NAME" on every call: a proxy routes them to that daemon
  int max_message_mb = 256;
};

// The daemon a job id names ("NAME-<32 hex>", from a daemon run with --instance-name); empty for other ids.
std::string InstanceOfJob(const std::string& job_id);
// Routes a call about `job_id` to its daemon through a proxy (examples/scale-out): adds "atelier-instance".
void RouteToJob(grpc::ClientContext& context, const std::string& job_id);

// Unset fields from the environment.
void FillFromEnvironment(ConnectionOptions& options);

// NOT_FOUND / INVALID_ARGUMENT for unreadable or non-PEM files (naming the flag, not the path).
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const ConnectionOptions& options);

}  // namespace atelier::client
