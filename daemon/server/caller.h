// Who a call comes from, as the queue, the quotas and Cancel see it. With --auth-tokens the token's name (set by
// TokenAuthProcessor as the call's peer identity), with mutual TLS the client certificate's name, else the peer's
// host. A client's self-chosen "atelier-client" header only splits its turns in the fair queue; it never changes
// whose quota a job counts against.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/server_context.h>

#include "server/access_tokens.h"
#include "server/client_quotas.h"

namespace atelier::server {

struct Caller {
  Caller() = default;
  // A caller known only by a name, with no limits (tests and in-process submitters).
  Caller(std::string name) : client_id(name), owner(std::move(name)) {}  // NOLINT: implicit on purpose

  std::string client_id;  // the fair queue's turn and ListJobs' client_id
  std::string owner;      // whose quota the job counts against, and who may cancel it
  ClientLimits limits;    // effective limits (the token's over the daemon's defaults)
  bool admin = true;      // may cancel or skip others' jobs (every caller when there are no tokens)
};

class Callers {
 public:
  Callers(std::shared_ptr<const AccessTokens> tokens, ClientLimits defaults)
      : tokens_(std::move(tokens)), defaults_(std::move(defaults)) {}

  Caller Of(const grpc::ServerContextBase& context) const;
  const ClientLimits& defaults() const { return defaults_; }

 private:
  const std::shared_ptr<const AccessTokens> tokens_;
  const ClientLimits defaults_;
};

}  // namespace atelier::server
