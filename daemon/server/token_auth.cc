#include "server/token_auth.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace atelier::server {
namespace {

absl::string_view View(const grpc::string_ref& s) { return absl::string_view(s.data(), s.size()); }

constexpr const char* kHowToSend =
    "this daemon requires a token: send the metadata 'authorization: Bearer TOKEN' (atelier --token or "
    "$ATELIER_TOKEN; Client(token=...) in Python)";

}  // namespace

absl::string_view BearerToken(absl::string_view header) {
  constexpr absl::string_view kScheme = "bearer ";
  if (header.size() <= kScheme.size() || !absl::EqualsIgnoreCase(header.substr(0, kScheme.size()), kScheme)) {
    return absl::string_view();
  }
  return absl::StripAsciiWhitespace(header.substr(kScheme.size()));
}

TokenAuthProcessor::TokenAuthProcessor(std::shared_ptr<const AccessTokens> tokens,
                                       std::vector<std::string> open_prefixes)
    : tokens_(std::move(tokens)), open_prefixes_(std::move(open_prefixes)) {}

grpc::Status TokenAuthProcessor::Process(const InputMetadata& auth_metadata, grpc::AuthContext*, OutputMetadata*,
                                         OutputMetadata*) {
  const auto path = auth_metadata.find(":path");
  const absl::string_view method = path == auth_metadata.end() ? absl::string_view() : View(path->second);
  for (const std::string& prefix : open_prefixes_) {
    if (absl::StartsWith(method, prefix)) return grpc::Status::OK;
  }
  const auto header = auth_metadata.find("authorization");
  if (header == auth_metadata.end()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, kHowToSend);
  if (BearerToken(View(header->second)).empty()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the authorization metadata must be 'Bearer TOKEN' (the token after the word Bearer)");
  }
  if (tokens_->Match(BearerToken(View(header->second))) == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the token is not one this daemon accepts (check --token / $ATELIER_TOKEN against the "
                        "operator's --auth-tokens file)");
  }
  return grpc::Status::OK;
}

}  // namespace atelier::server
