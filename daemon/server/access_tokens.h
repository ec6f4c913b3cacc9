// --auth-tokens FILE: who may use the daemon, and each one's limits. One token per line:
//
//   # token                                                          name    limits (all optional)
//   9f3c1e0b6a2d4f8e7c5b3a1908d6e4f2a0c8b6d4e2f0a8c6b4d2e0f8a6c4b2d0   alice   jobs=2 queued=4 work_per_minute=2000
//   5b1d9f7e3c2a0e8d6c4b2a09f7e5d3c1b9a7f5e3d1c9b7a5f3e1d9c7b5a3f1e9   ops     admin
//
// A token is 16 to 512 printable ASCII characters without spaces (`openssl rand -hex 32` makes one); the name (any
// word without '=') defaults to "token-LINE" and is what logs, ListJobs and quotas show instead of the token. Limits
// override the daemon's per-client defaults (ClientLimits). Only SHA-256 digests of the tokens are kept in memory,
// and matching compares every digest in constant time, so neither the file's tokens nor their lengths leak through
// timing; errors name the line, never its token.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/client_quotas.h"

namespace atelier::server {

struct AccessToken {
  std::string name;
  std::array<std::uint8_t, 32> digest{};  // SHA-256 of the token
  ClientLimits limits;                   // what the line sets; unset fields take the daemon's defaults
  bool admin = false;                    // may cancel or skip any client's job
};

class AccessTokens {
 public:
  static absl::StatusOr<AccessTokens> Load(const std::filesystem::path& path);
  // `text` in the file's format.
  static absl::StatusOr<AccessTokens> Parse(absl::string_view text);

  // The token `presented` is, or null. Constant time in `presented`'s content for a given token count.
  const AccessToken* Match(absl::string_view presented) const;
  const std::vector<AccessToken>& tokens() const { return tokens_; }

 private:
  std::vector<AccessToken> tokens_;
};

}  // namespace atelier::server
