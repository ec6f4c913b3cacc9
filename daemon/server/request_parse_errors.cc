#include "server/request_parse_errors.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/stubs/logging.h>

#include <mutex>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "util/user_text.h"

namespace atelier::server {
namespace {

using grpc::experimental::InterceptionHookPoints;

// What protobuf logged on this thread since the last request this thread parsed. gRPC parses a request and runs
// its POST_RECV_MESSAGE interception on the same thread, one right after the other.
thread_local std::string t_protobuf_report;
google::protobuf::LogHandler* g_previous_handler = nullptr;

constexpr absl::string_view kUtf8Marker = "contains invalid UTF-8 data when parsing a protocol buffer";

void CaptureProtobufLog(google::protobuf::LogLevel level, const char* filename, int line, const std::string& message) {
  // A parse failure caused by a client is the client's error, answered to the client; it is not the daemon's log.
  if (absl::StrContains(message, kUtf8Marker)) {
    t_protobuf_report = message;
    return;
  }
  if (g_previous_handler != nullptr) g_previous_handler(level, filename, line, message);
}

// "String field 'atelier.v1.X.prompt' contains invalid UTF-8 ..." -> "atelier.v1.X.prompt".
std::string Utf8FieldOf(const std::string& report) {
  const auto open = report.find('\'');
  const auto close = open == std::string::npos ? std::string::npos : report.find('\'', open + 1);
  if (close == std::string::npos) return "";
  return report.substr(open + 1, close - open - 1);
}

class RequestParseErrorInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit RequestParseErrorInterceptor(std::string method) : method_(std::move(method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      std::string report = std::exchange(t_protobuf_report, std::string());
      if (methods->GetRecvMessage() == nullptr) {
        unparseable_ = true;
        report_ = std::move(report);
      }
    }
    if (unparseable_ && methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      // Only the library's answer is replaced; a status the service chose stays as it is.
      const grpc::Status status = methods->GetSendStatus();
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED && status.error_message().empty()) {
        methods->ModifySendStatus(
            grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, UnparseableRequestMessage(method_, report_)));
      }
    }
    methods->Proceed();
  }

 private:
  const std::string method_;
  bool unparseable_ = false;
  std::string report_;
};

// "/atelier.v1.Generation/Generate" -> "atelier.v1.GenerateRequest" (empty when the method is not in the pool).
std::string RequestTypeOf(const std::string& method) {
  std::string dotted = method;
  if (!dotted.empty() && dotted.front() == '/') dotted.erase(0, 1);
  const auto slash = dotted.find('/');
  if (slash == std::string::npos) return "";
  dotted[slash] = '.';
  const auto* descriptor = google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(dotted);
  return descriptor == nullptr ? "" : descriptor->input_type()->full_name();
}

}  // namespace

std::string UnparseableRequestMessage(const std::string& method, const std::string& protobuf_report) {
  std::string type = RequestTypeOf(method);
  const std::string what = type.empty() ? std::string("request") : absl::StrCat(type);
  const std::string field = Utf8FieldOf(protobuf_report);
  if (!field.empty()) {
    return absl::StrCat(method, ": the ", what, " could not be parsed: string field ", Quoted(field),
                        " is not valid UTF-8 (proto3 strings must be UTF-8 text; encode the text as UTF-8)");
  }
  return absl::StrCat(method, ": the ", what,
                      " could not be parsed: the bytes are not a valid protobuf encoding of it, or its messages are "
                      "nested deeper than protobuf's limit of 100 (one google.protobuf.Struct level in plugin args "
                      "counts 3: Struct, its map entry and Value, so at most about 32 levels)");
}

RequestParseErrorInterceptorFactory::RequestParseErrorInterceptorFactory() {
  static std::once_flag once;
  std::call_once(once, [] { g_previous_handler = google::protobuf::SetLogHandler(&CaptureProtobufLog); });
}

grpc::experimental::Interceptor* RequestParseErrorInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new RequestParseErrorInterceptor(info->method());
}

}  // namespace atelier::server
