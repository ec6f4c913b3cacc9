#include "server/job_stream.h"

#include "absl/status/status.h"
#include "server/daemon_metrics.h"

#include "server/grpc_status.h"

namespace atelier::server {
namespace {

class RejectedStream final : public grpc::ServerWriteReactor<v1::GenerateEvent> {
 public:
  explicit RejectedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateEvent>* JobStream::Reject(const grpc::Status& status) {
  DaemonMetrics::Global().Refused(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())));
  return new RejectedStream(status);
}

JobStream* JobStream::Attach(std::shared_ptr<Job> job, EventCursor cursor, std::function<void()> on_client_gone) {
  auto* stream = new JobStream(std::move(job), cursor, std::move(on_client_gone));
  // AddObserver notifies once, which starts the first write (gRPC backlogs it until the reactor is bound).
  stream->job_->AddObserver(stream->link_);
  return stream;
}

JobStream::JobStream(std::shared_ptr<Job> job, EventCursor cursor, std::function<void()> on_client_gone)
    : job_(std::move(job)),
      link_(std::make_shared<Link>()),
      on_client_gone_(std::move(on_client_gone)),
      cursor_(cursor) {
  link_->stream = this;
  DaemonMetrics::Global().StreamOpened();
}

namespace {

// "progress", "preview", "result", ...: the name of the event's oneof member.
const std::string& EventKind(const v1::GenerateEvent& event) {
  static const std::string kUnknown = "unknown";
  const auto* oneof = v1::GenerateEvent::descriptor()->FindOneofByName("event");
  const auto* field = oneof == nullptr ? nullptr : event.GetReflection()->GetOneofFieldDescriptor(event, oneof);
  return field == nullptr ? kUnknown : field->name();
}

}  // namespace

void JobStream::Link::OnJobUpdated() {
  std::lock_guard<std::recursive_mutex> lock(mu);
  if (stream != nullptr) stream->Pump();
}

void JobStream::Pump() {
  std::unique_lock<std::mutex> lock(mu_);
  if (write_in_flight_ || finish_called_) return;
  if (client_gone_) {
    finish_called_ = true;
    lock.unlock();
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the stream"));
    return;
  }
  bool ended = false;
  absl::Status final_status;
  std::shared_ptr<const v1::GenerateEvent> event = job_->Next(cursor_, &ended, &final_status);
  if (event != nullptr) {
    write_in_flight_ = true;
    if (event->has_finished()) {
      // The shared final event gets this stream's own drop count.
      finished_copy_ = *event;
      finished_copy_.mutable_finished()->set_dropped_events(cursor_.dropped);
      in_flight_.reset();
      lock.unlock();
      DaemonMetrics::Global().EventSent("finished", finished_copy_.ByteSizeLong());
      StartWrite(&finished_copy_);
      return;
    }
    in_flight_ = std::move(event);
    const v1::GenerateEvent* message = in_flight_.get();
    lock.unlock();
    DaemonMetrics::Global().EventSent(EventKind(*message), message->ByteSizeLong());
    if (message->has_progress() && message->progress().has_preview()) {
      DaemonMetrics::Global().EventSent("preview", message->progress().preview().ByteSizeLong());
    }
    StartWrite(message);
    return;
  }
  if (ended) {
    finish_called_ = true;
    lock.unlock();
    Finish(ToGrpcStatus(final_status));
  }
}

void JobStream::OnWriteDone(bool ok) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    write_in_flight_ = false;
    in_flight_.reset();
    if (!ok) client_gone_ = true;  // no further write can succeed
  }
  Pump();
}

void JobStream::OnCancel() {
  std::function<void()> on_gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    client_gone_ = true;
    on_gone = std::move(on_client_gone_);
  }
  if (on_gone && !job_->finished()) on_gone();
  Pump();
}

void JobStream::OnDone() {
  {
    std::lock_guard<std::recursive_mutex> lock(link_->mu);
    link_->stream = nullptr;
  }
  DaemonMetrics::Global().StreamClosed();
  delete this;
}

}  // namespace atelier::server
