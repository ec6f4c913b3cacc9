#include "server/server_security.h"

#include <arpa/inet.h>
#include <netinet/in.h>


#include <grpcpp/security/server_credentials.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/token_auth.h"
#include "util/pem_file.h"

namespace atelier::server {
namespace {

std::string HostOf(const std::string& listen) {
  if (absl::StartsWith(listen, "[")) {
    const auto close = listen.find(']');
    return close == std::string::npos ? listen : listen.substr(1, close - 1);
  }
  const auto colon = listen.rfind(':');
  return colon == std::string::npos ? listen : listen.substr(0, colon);
}

}  // namespace

bool IsLoopbackListen(const std::string& listen) {
  if (absl::StartsWith(listen, "unix:") || absl::StartsWith(listen, "unix-abstract:")) return true;
  const std::string host = HostOf(listen);
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

absl::StatusOr<ServerSecurity> BuildServerSecurity(const SecurityOptions& options) {
  ServerSecurity security;
  const bool loopback = IsLoopbackListen(options.listen);
  const bool tls = !options.tls_cert.empty() || !options.tls_key.empty();
  if (tls && (options.tls_cert.empty() || options.tls_key.empty())) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert (the certificate chain) and --tls-key (its key)");
  }
  if (!options.tls_client_ca.empty() && !tls) {
    return absl::InvalidArgumentError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key as well");
  }
  if (!options.auth_tokens.empty()) {
    auto tokens = AccessTokens::Load(options.auth_tokens);
    if (!tokens.ok()) return tokens.status();
    security.tokens = std::make_shared<const AccessTokens>(*std::move(tokens));
  }
  security.client_certificates = !options.tls_client_ca.empty();
  const bool authenticated = security.tokens != nullptr || security.client_certificates;
  if (!loopback && !authenticated && !options.insecure) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing to listen on ", options.listen, " beyond loopback without authentication: anyone who can reach "
        "the port could use the GPU and read every job. Give --auth-tokens FILE (with --tls-cert/--tls-key so the "
        "tokens travel encrypted) or --tls-client-ca, or --insecure if the network itself is trusted"));
  }
  if (!loopback && security.tokens != nullptr && !tls) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing to take bearer tokens in plain text on ", options.listen, ": anyone on the path could copy "
        "them. Give --tls-cert and --tls-key, or listen on loopback behind a TLS proxy (examples/scale-out)"));
  }

  std::vector<std::string> open;
  std::vector<std::string> open_names;
  if (options.open_health) {
    open.push_back("/grpc.health.v1.Health/");
    open_names.push_back("health");
  }
  if (options.open_reflection) {
    open.push_back("/grpc.reflection.");
    open_names.push_back("reflection");
  }

  if (tls) {
    auto cert = util::ReadPemFile(options.tls_cert, "--tls-cert");
    if (!cert.ok()) return cert.status();
    auto key = util::ReadPemFile(options.tls_key, "--tls-key");
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    if (security.client_certificates) {
      auto ca = util::ReadPemFile(options.tls_client_ca, "--tls-client-ca");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    security.credentials = grpc::SslServerCredentials(ssl);
    security.summary = security.client_certificates ? "mutual TLS" : "TLS";
  } else if (security.tokens != nullptr) {
    // Loopback: gRPC's local credentials (plain HTTP/2 on the wire, peers checked to be local) carry the token
    // processor; insecure credentials cannot.
    security.credentials = grpc::experimental::LocalServerCredentials(
        absl::StartsWith(options.listen, "unix") ? UDS : LOCAL_TCP);
    security.summary = "plain text on loopback";
  } else {
    security.credentials = grpc::InsecureServerCredentials();
    security.summary = loopback ? "plain text on loopback, no authentication"
                                : "plain text beyond loopback, no authentication (--insecure)";
  }
  if (security.tokens != nullptr) {
    security.credentials->SetAuthMetadataProcessor(std::make_shared<TokenAuthProcessor>(security.tokens, open));
    absl::StrAppend(&security.summary, ", ", security.tokens->tokens().size(), " bearer token(s)",
                    open_names.empty() ? "" : absl::StrCat(" (", absl::StrJoin(open_names, " and "), " open)"));
  }
  return security;
}

}  // namespace atelier::server
