// Requests gRPC cannot parse (bytes that are not protobuf, a proto3 string that is not UTF-8, messages nested past
// protobuf's depth limit) reach no handler: gRPC 1.51's callback API answers them UNIMPLEMENTED with an empty
// message, which tells a client nothing. This server interceptor notices the failed parse (the call has no request
// message) and rewrites that status to INVALID_ARGUMENT naming the RPC, the request type and the parser's reason;
// protobuf's own report of a non-UTF-8 field (a log line on the parsing thread) is captured to name the field.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <string>

namespace atelier::server {

class RequestParseErrorInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // Installs the protobuf log capture once per process (the previous handler still gets every other line).
  RequestParseErrorInterceptorFactory();
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override;
};

// The message sent for an unparseable request to `method` ("/atelier.v1.Generation/Generate"); `protobuf_report` is
// what protobuf logged while parsing it (empty when it logged nothing). Exposed for tests.
std::string UnparseableRequestMessage(const std::string& method, const std::string& protobuf_report);

}  // namespace atelier::server
