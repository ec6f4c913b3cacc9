// Exit codes of the `atelier` command line client, so scripts can tell failure kinds apart.
#pragma once

#include <grpcpp/support/status.h>

namespace atelier::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,            // anything not listed below
  kExitUsage = 2,            // bad command line
  kExitUnreachable = 3,      // daemon not reachable (UNAVAILABLE, DEADLINE_EXCEEDED)
  kExitNotFound = 4,         // NOT_FOUND: job, model or file
  kExitInvalid = 5,          // INVALID_ARGUMENT / FAILED_PRECONDITION / OUT_OF_RANGE / ALREADY_EXISTS
  kExitBusy = 6,             // RESOURCE_EXHAUSTED: queue full or too large
  kExitCancelled = 7,        // CANCELLED: the job was cancelled
  kExitUnimplemented = 8,    // UNIMPLEMENTED: this daemon cannot do that
  kExitNotServing = 9,       // health check answered NOT_SERVING
};

inline int ExitCodeFor(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::OK: return kExitOk;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED: return kExitUnreachable;
    case grpc::StatusCode::NOT_FOUND: return kExitNotFound;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::ALREADY_EXISTS: return kExitInvalid;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return kExitBusy;
    case grpc::StatusCode::CANCELLED: return kExitCancelled;
    case grpc::StatusCode::UNIMPLEMENTED: return kExitUnimplemented;
    default: return kExitError;
  }
}

}  // namespace atelier::cli
