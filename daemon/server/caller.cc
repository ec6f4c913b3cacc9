#include "server/caller.h"

#include <grpcpp/security/auth_context.h>

#include "absl/strings/str_cat.h"
#include "server/token_auth.h"

namespace atelier::server {
namespace {

std::string FirstProperty(const grpc::AuthContext& auth, const char* name) {
  const auto values = auth.FindPropertyValues(name);
  return values.empty() ? std::string() : std::string(values.front().data(), values.front().size());
}

// "ipv4:127.0.0.1:5555" -> "ipv4:127.0.0.1"; "ipv6:[::1]:5555" -> "ipv6:[::1]"; "unix:/path" stays.
std::string PeerHost(std::string peer) {
  const auto colon = peer.rfind(':');
  if (colon != std::string::npos && colon > peer.find(':')) peer.resize(colon);
  return peer;
}

}  // namespace

Caller Callers::Of(const grpc::ServerContextBase& context) const {
  Caller caller;
  const auto& metadata = context.client_metadata();
  const auto header = metadata.find("atelier-client");
  const std::string declared = header != metadata.end() && !header->second.empty()
                                   ? std::string(header->second.data(), std::min<size_t>(header->second.size(), 128))
                                   : std::string();
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  // TokenAuthProcessor let the call in: a token it carries is valid (open calls, e.g. health, may carry none).
  const AccessToken* token = nullptr;
  if (tokens_ != nullptr) {
    const auto header = metadata.find("authorization");
    if (header != metadata.end()) {
      token = tokens_->Match(BearerToken(absl::string_view(header->second.data(), header->second.size())));
    }
  }
  if (token != nullptr) {
    caller.owner = token->name;
    caller.limits = token->limits.Over(defaults_);
    caller.admin = token->admin;
  } else if (const std::string cn = auth ? FirstProperty(*auth, "x509_common_name") : std::string(); !cn.empty()) {
    caller.owner = absl::StrCat("cert:", cn.substr(0, 128));
    caller.limits = defaults_;
    caller.admin = false;  // a certificate names one client; none of them may cancel another's jobs
  } else {
    caller.owner = PeerHost(context.peer());
    caller.limits = defaults_;
    caller.admin = tokens_ == nullptr;  // open calls (health) never cancel anything; without tokens all may
  }
  caller.client_id = declared.empty() ? caller.owner
                     : token != nullptr ? absl::StrCat(caller.owner, "/", declared)
                                        : declared;
  return caller;
}

}  // namespace atelier::server
