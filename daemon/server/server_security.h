// How the listening port is secured, from the daemon's flags: plain loopback (the default), bearer tokens
// (--auth-tokens), TLS (--tls-cert / --tls-key) and mutual TLS (--tls-client-ca), and the refusal to listen beyond
// loopback with nothing of these unless --insecure says the operator means it.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"
#include "server/access_tokens.h"

namespace atelier::server {

struct SecurityOptions {
  std::string listen;           // host:port, or unix:PATH
  std::string auth_tokens;      // --auth-tokens file; empty: no tokens
  std::string tls_cert;         // PEM certificate chain
  std::string tls_key;          // PEM private key
  std::string tls_client_ca;    // PEM CA bundle clients' certificates must chain to (mutual TLS)
  bool insecure = false;        // --insecure: beyond loopback with neither tokens nor client certificates
  bool open_health = true;      // grpc.health.v1.Health without a token (load balancers, supervisors)
  bool open_reflection = false; // grpc.reflection without a token
};

struct ServerSecurity {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  std::shared_ptr<const AccessTokens> tokens;  // null without --auth-tokens
  bool client_certificates = false;           // mutual TLS: a client's certificate name identifies it
  std::string summary;                        // for the start-up log: what protects the port (never a path)
};

// True for 127.0.0.0/8, ::1, localhost and unix: addresses.
bool IsLoopbackListen(const std::string& listen);

absl::StatusOr<ServerSecurity> BuildServerSecurity(const SecurityOptions& options);

}  // namespace atelier::server
