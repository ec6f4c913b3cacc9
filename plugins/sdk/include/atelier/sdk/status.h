// Plugin SDK: errors across the C ABI. Inside a plugin, C++ code reports with absl::Status; at the hook boundary
// Guard turns a status or an escaping exception into the atelier_status + message the host expects (no exception
// ever crosses the ABI).
#pragma once

#include <exception>
#include <new>
#include <string>

#include "absl/status/status.h"
#include "atelier/plugin.h"

namespace atelier::sdk {

// The ABI status for an absl::Status code.
inline atelier_status ToAbi(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return ATELIER_OK;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return ATELIER_INVALID_ARGUMENT;
    case absl::StatusCode::kNotFound: return ATELIER_NOT_FOUND;
    case absl::StatusCode::kUnimplemented: return ATELIER_UNIMPLEMENTED;
    case absl::StatusCode::kFailedPrecondition: return ATELIER_UNSUPPORTED;
    case absl::StatusCode::kUnavailable: return ATELIER_UNAVAILABLE;
    case absl::StatusCode::kCancelled: return ATELIER_CANCELLED;
    case absl::StatusCode::kResourceExhausted: return ATELIER_RESOURCE_EXHAUSTED;
    case absl::StatusCode::kPermissionDenied: return ATELIER_PERMISSION_DENIED;
    default: return ATELIER_INTERNAL;
  }
}

// Writes `status` into `err` and returns its ABI code (ATELIER_OK for OK).
inline atelier_status Report(const absl::Status& status, atelier_error* err) {
  if (status.ok()) return ATELIER_OK;
  return atelier_fail(err, ToAbi(status.code()), "%s", std::string(status.message()).c_str());
}

// The absl::Status of a host function's result (what the host wrote into `err`).
inline absl::Status FromAbi(atelier_status code, const atelier_error& err) {
  if (code == ATELIER_OK) return absl::OkStatus();
  const std::string message(err.message);
  switch (code) {
    case ATELIER_INVALID_ARGUMENT: return absl::InvalidArgumentError(message);
    case ATELIER_NOT_FOUND: return absl::NotFoundError(message);
    case ATELIER_UNSUPPORTED: return absl::FailedPreconditionError(message);
    case ATELIER_UNAVAILABLE: return absl::UnavailableError(message);
    case ATELIER_CANCELLED: return absl::CancelledError(message);
    case ATELIER_RESOURCE_EXHAUSTED: return absl::ResourceExhaustedError(message);
    case ATELIER_UNIMPLEMENTED: return absl::UnimplementedError(message);
    case ATELIER_PERMISSION_DENIED: return absl::PermissionDeniedError(message);
    default: return absl::InternalError(message);
  }
}

// Runs a hook body returning absl::Status; exceptions become RESOURCE_EXHAUSTED (allocation) or INTERNAL.
template <typename Body>
atelier_status Guard(atelier_error* err, Body&& body) {
  try {
    return Report(body(), err);
  } catch (const std::bad_alloc&) {
    return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  } catch (const std::exception& e) {
    return atelier_fail(err, ATELIER_INTERNAL, "%s", e.what());
  } catch (...) {
    return atelier_fail(err, ATELIER_INTERNAL, "unknown C++ exception");
  }
}

}  // namespace atelier::sdk
