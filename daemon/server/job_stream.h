// The server side of one Generate or Watch stream: a gRPC callback reactor that pulls a job's events in order.
//
// Back-pressure: at most one write is in flight; when it completes the stream takes the next event from the job
// (Job::Next), so a slow client simply skips superseded lossy events and memory per stream stays one event. The
// executor never waits for a stream. Reactions never block: they take this stream's mutex briefly and call
// StartWrite/Finish outside it.
#pragma once

#include <functional>
#include <memory>
#include <mutex>

#include <grpcpp/grpcpp.h>

#include "server/job.h"

namespace atelier::server {

class JobStream final : public grpc::ServerWriteReactor<v1::GenerateEvent> {
 public:
  // Attaches a stream to `job`, starting at `cursor`. `on_client_gone` (may be empty) runs once when the client
  // cancels or disconnects before the job ended: the submitter's stream cancels the job with it.
  static JobStream* Attach(std::shared_ptr<Job> job, EventCursor cursor, std::function<void()> on_client_gone);

  // A stream that ends at once with `status` (admission errors).
  static grpc::ServerWriteReactor<v1::GenerateEvent>* Reject(const grpc::Status& status);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // Forwards job updates to the stream while it exists (the job only holds a weak pointer to this).
  // Recursive so that an OnDone run inline from a Finish inside Pump cannot deadlock (gRPC 1.51 schedules it
  // instead, but the API does not promise that).
  struct Link final : JobObserver {
    std::recursive_mutex mu;
    JobStream* stream = nullptr;
    void OnJobUpdated() override;
  };

  JobStream(std::shared_ptr<Job> job, EventCursor cursor, std::function<void()> on_client_gone);
  // Starts the next write, or finishes the stream, when nothing is in flight.
  void Pump();

  const std::shared_ptr<Job> job_;
  const std::shared_ptr<Link> link_;
  std::function<void()> on_client_gone_;

  std::mutex mu_;
  EventCursor cursor_;
  bool write_in_flight_ = false;
  bool finish_called_ = false;
  bool client_gone_ = false;
  // The event being written; gRPC reads it until OnWriteDone.
  std::shared_ptr<const v1::GenerateEvent> in_flight_;
  v1::GenerateEvent finished_copy_;  // the final event, with this stream's drop count
};

}  // namespace atelier::server
