// The one place every RPC's token is checked: a gRPC AuthMetadataProcessor on the listening port's credentials.
// It runs before any service sees the call; a call without a valid `authorization: Bearer TOKEN` ends there with
// UNAUTHENTICATED. Services learn which token it was from the same header (caller.h), not from auth-context
// properties: gRPC 1.51 adds those to the connection's context, so on a connection shared by two clients (Python
// channels to one address share one) a name set for one call would show in the next one's.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/security/auth_metadata_processor.h>

#include "server/access_tokens.h"

namespace atelier::server {

// "Bearer TOKEN" (the scheme in any case) -> "TOKEN"; empty for anything else.
absl::string_view BearerToken(absl::string_view header);

class TokenAuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  // Calls whose method starts with one of `open_prefixes` (e.g. "/grpc.health.v1.Health/") need no token.
  TokenAuthProcessor(std::shared_ptr<const AccessTokens> tokens, std::vector<std::string> open_prefixes);

  // Hashing one header is cheap: it runs inline on gRPC's thread.
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context, OutputMetadata* consumed,
                       OutputMetadata* response_metadata) override;

 private:
  const std::shared_ptr<const AccessTokens> tokens_;
  const std::vector<std::string> open_prefixes_;
};

}  // namespace atelier::server
