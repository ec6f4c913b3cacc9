#include "connection.h"

#include <cctype>
#include <cstdlib>

#include <grpcpp/support/client_interceptor.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "util/pem_file.h"

namespace atelier::client {
namespace {

using grpc::experimental::InterceptionHookPoints;

using Headers = std::vector<std::pair<std::string, std::string>>;

// Adds the same headers (the bearer token, the instance) to every call: one place instead of every ClientContext.
class HeadersInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit HeadersInterceptor(const Headers* headers) : headers_(headers) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      for (const auto& [key, value] : *headers_) methods->GetSendInitialMetadata()->insert({key, value});
    }
    methods->Proceed();
  }

 private:
  const Headers* headers_;
};

class HeadersInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit HeadersInterceptorFactory(Headers headers) : headers_(std::move(headers)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new HeadersInterceptor(&headers_);
  }

 private:
  const Headers headers_;  // lives as long as the channel, which owns the factory
};

void FromEnv(std::string& field, const char* name) {
  if (!field.empty()) return;
  const char* value = std::getenv(name);
  if (value != nullptr) field = value;
}

}  // namespace

std::string InstanceOfJob(const std::string& job_id) {
  const auto dash = job_id.rfind('-');
  if (dash == std::string::npos || dash == 0 || dash > 32 || job_id.size() - dash - 1 != 32) return "";
  for (std::size_t i = dash + 1; i < job_id.size(); ++i) {
    if (!std::isxdigit(static_cast<unsigned char>(job_id[i]))) return "";
  }
  for (std::size_t i = 0; i < dash; ++i) {
    if (!std::isalnum(static_cast<unsigned char>(job_id[i])) && job_id[i] != '_') return "";
  }
  return job_id.substr(0, dash);
}

void RouteToJob(grpc::ClientContext& context, const std::string& job_id) {
  const std::string instance = InstanceOfJob(job_id);
  if (!instance.empty()) context.AddMetadata("atelier-instance", instance);
}

void FillFromEnvironment(ConnectionOptions& options) {
  FromEnv(options.server, "ATELIER_SERVER");
  if (options.server.empty()) options.server = "127.0.0.1:50051";
  FromEnv(options.token, "ATELIER_TOKEN");
  FromEnv(options.tls_ca, "ATELIER_TLS_CA");
  FromEnv(options.tls_cert, "ATELIER_TLS_CERT");
  FromEnv(options.tls_key, "ATELIER_TLS_KEY");
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const ConnectionOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_mb * 1024 * 1024);
  args.SetMaxSendMessageSize(options.max_message_mb * 1024 * 1024);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30 * 1000);
  std::string target = options.server;
  if (absl::StrContains(target, ',')) {
    // "a:1,b:2" -> gRPC's ipv4/ipv6 list URI, balanced call by call.
    std::vector<std::string> addresses = absl::StrSplit(target, ',', absl::SkipWhitespace());
    const bool v6 = absl::StartsWith(addresses.front(), "[");
    target = absl::StrCat(v6 ? "ipv6:" : "ipv4:", absl::StrJoin(addresses, ","));
    args.SetLoadBalancingPolicyName("round_robin");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (!options.tls_ca.empty() || !options.tls_cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca.empty()) {
      auto ca = util::ReadPemFile(options.tls_ca, "--tls-ca");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (!options.tls_cert.empty()) {
      auto cert = util::ReadPemFile(options.tls_cert, "--tls-cert");
      if (!cert.ok()) return cert.status();
      auto key = util::ReadPemFile(options.tls_key, "--tls-key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  Headers headers;
  if (!options.token.empty()) headers.emplace_back("authorization", absl::StrCat("Bearer ", options.token));
  if (!options.instance.empty()) headers.emplace_back("atelier-instance", options.instance);
  if (headers.empty()) return grpc::CreateCustomChannel(target, credentials, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<HeadersInterceptorFactory>(std::move(headers)));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, args, std::move(interceptors));
}

}  // namespace atelier::client
