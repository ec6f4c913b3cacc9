#pragma once
// Reading a PEM file (certificate, key or CA bundle) named by a flag, for the daemon's TLS and the clients'.

#include <string>

#include "absl/status/statusor.h"

namespace atelier::util {

// The file's text when it holds a PEM block. Errors name `flag`, never the path: the paths of secrets stay out of
// logs and errors.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const char* flag);

}  // namespace atelier::util
