// The one place absl::Status becomes grpc::Status (the codes are numerically identical).
#pragma once

#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/status.h>
#include <grpcpp/server_context.h>

#include <string>

#include "absl/status/status.h"

namespace atelier::server {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// Finishes a unary callback RPC with `status` and returns its reactor.
inline grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context, const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

}  // namespace atelier::server
