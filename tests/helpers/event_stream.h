// A Generate or Watch call read on its own thread, so tests can wait for conditions on its events.
#pragma once

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "atelier/v1/generation.grpc.pb.h"

namespace atelier::testing {

// One Generate or Watch call read on its own thread, so tests can wait for conditions on its events.
class Stream {
 public:
  using Events = std::vector<::atelier::v1::GenerateEvent>;

  void Start(std::unique_ptr<grpc::ClientReader<::atelier::v1::GenerateEvent>> reader,
             std::chrono::milliseconds delay_per_read = std::chrono::milliseconds(0)) {
    reader_ = std::move(reader);
    thread_ = std::thread([this, delay_per_read] {
      ::atelier::v1::GenerateEvent event;
      while (true) {
        if (paused_.load()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        if (!reader_->Read(&event)) break;
        {
          std::lock_guard<std::mutex> lock(mu_);
          events_.push_back(event);
        }
        cv_.notify_all();
        if (delay_per_read.count() > 0) std::this_thread::sleep_for(delay_per_read);
      }
      grpc::Status status = reader_->Finish();
      {
        std::lock_guard<std::mutex> lock(mu_);
        status_ = status;
        done_ = true;
      }
      cv_.notify_all();
    });
  }
  ~Stream() {
    paused_ = false;
    context.TryCancel();
    if (thread_.joinable()) thread_.join();
  }

  bool WaitFor(const std::function<bool(const Events&)>& condition, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return condition(events_); });
  }
  // Waits for the end of the stream and returns its status (DEADLINE_EXCEEDED if it does not end in time).
  grpc::Status Wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return done_; })) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "stream did not end in the test's time");
    }
    return status_;
  }
  Events events() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  std::string job_id() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_.empty() ? "" : events_[0].job_id();
  }
  void Pause(bool paused) { paused_ = paused; }

  grpc::ClientContext context;

 private:
  std::unique_ptr<grpc::ClientReader<::atelier::v1::GenerateEvent>> reader_;
  std::thread thread_;
  std::atomic<bool> paused_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Events events_;
  bool done_ = false;
  grpc::Status status_;
};

inline int Count(const Stream::Events& events, ::atelier::v1::GenerateEvent::EventCase kind) {
  return static_cast<int>(std::count_if(events.begin(), events.end(),
                                        [kind](const auto& e) { return e.event_case() == kind; }));
}

}  // namespace atelier::testing
