// Propagation helpers for absl::Status / absl::StatusOr, Abseil style.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ATELIER_STATUS_CONCAT_INNER_(a, b) a##b
#define ATELIER_STATUS_CONCAT_(a, b) ATELIER_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define ATELIER_RETURN_IF_ERROR(expr)                   \
  do {                                                  \
    ::absl::Status atelier_status_ = (expr);            \
    if (!atelier_status_.ok()) return atelier_status_;  \
  } while (false)

// `ATELIER_ASSIGN_OR_RETURN(auto x, Foo());` assigns the value or returns the error.
#define ATELIER_ASSIGN_OR_RETURN(lhs, expr) \
  ATELIER_ASSIGN_OR_RETURN_IMPL_(ATELIER_STATUS_CONCAT_(atelier_statusor_, __LINE__), lhs, expr)
#define ATELIER_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()
