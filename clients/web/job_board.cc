#include "job_board.h"

#include <chrono>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace atelier::web {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxQueuedMessages = 256;
constexpr std::size_t kFinishedRemembered = 64;

std::string DataUri(const std::string& mime, const std::string& bytes) {
  return absl::StrCat("data:", mime.empty() ? "application/octet-stream" : mime, ";base64,",
                      absl::Base64Escape(bytes));
}

std::string Sse(const char* type, const json& data) {
  return absl::StrCat("event: ", type, "\ndata: ", data.dump(), "\n\n");
}

std::string ProgressMessage(const v1::GenerateEvent& event) {
  const v1::Progress& p = event.progress();
  json data{{"job_id", event.job_id()},
            {"published_us", event.published_unix_us()},
            {"step", p.sampling_step()},
            {"steps", p.sampling_steps()},
            {"job_no", p.job_no()},
            {"job_count", p.job_count()},
            {"progress", p.progress()},
            {"eta_seconds", p.eta_seconds()},
            {"pass", p.pass()},
            {"text", p.text()},
            {"preview", p.has_preview() && !p.preview().data().empty()
                            ? json(DataUri(p.preview().mime_type(), p.preview().data()))
                            : json(nullptr)}};
  return Sse("progress", data);
}

}  // namespace

std::string Subscription::Next(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return !queue_.empty() || closed_; });
  std::string out;
  for (auto& [message, droppable] : queue_) out += message;
  queue_.clear();
  return out;
}

void Subscription::Push(std::string message, bool droppable) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    if (queue_.size() >= kMaxQueuedMessages) {
      // A reader that fell behind: drop the oldest preview (never a result or an end).
      for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if (it->second) {
          queue_.erase(it);
          break;
        }
      }
    }
    queue_.emplace_back(std::move(message), droppable);
  }
  cv_.notify_all();
}

void Subscription::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

bool Subscription::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

void JobBoard::Broadcast(const std::string& message, bool droppable) {
  for (auto& [raw, subscriber] : subscribers_) subscriber->Push(message, droppable);
}

void JobBoard::Publish(const v1::GenerateEvent& event, const std::string& prompt, bool mine) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string& id = event.job_id();
  if (id.empty()) return;
  auto [it, inserted] = jobs_.try_emplace(id);
  Tracked& job = it->second;
  if (inserted) {
    job.order = ++counter_;
    job.mine = mine;
    job.prompt = prompt;
    job.progress.job = id;
  }
  json base{{"job_id", id}, {"published_us", event.published_unix_us()}};
  switch (event.event_case()) {
    case v1::GenerateEvent::kQueued: {
      json data = base;
      data.update({{"position", event.queued().position()},
                   {"queue_length", event.queued().queue_length()},
                   {"prompt", job.prompt},
                   {"mine", job.mine}});
      Broadcast(Sse("queued", data), false);
      break;
    }
    case v1::GenerateEvent::kStarted: {
      job.progress.active = true;
      job.progress.started_unix_ms = absl::ToUnixMillis(absl::Now());
      job.progress.job_count = 1;
      json data = base;
      data.update({{"seeds", std::vector<std::int64_t>(event.started().all_seeds().begin(),
                                                       event.started().all_seeds().end())},
                   {"image_count", event.started().image_count()},
                   {"estimated_seconds", event.started().estimated_seconds()},
                   {"prompt", job.prompt},
                   {"mine", job.mine}});
      Broadcast(Sse("started", data), false);
      break;
    }
    case v1::GenerateEvent::kProgress: {
      const v1::Progress& p = event.progress();
      ProgressState& s = job.progress;
      s.active = true;
      s.job_no = p.job_no();
      s.job_count = std::max(1, p.job_count());
      s.sampling_step = p.sampling_step();
      s.sampling_steps = p.sampling_steps();
      s.elapsed_seconds = p.elapsed_seconds();
      s.textinfo = p.text();
      if (p.has_preview() && !p.preview().data().empty()) s.current_image = p.preview().data();
      job.last_progress = event;
      // No page open: nothing to encode (the HTTP API's own work stays the daemon's).
      if (!subscribers_.empty()) Broadcast(ProgressMessage(event), true);
      break;
    }
    case v1::GenerateEvent::kResult: {
      if (subscribers_.empty()) break;  // images are encoded only for open pages
      const v1::Result& r = event.result();
      json data = base;
      data.update({{"index", r.index()},
                   {"image", DataUri(r.image().mime_type(), r.image().data())},
                   {"infotext", r.infotext()},
                   {"seed", r.seed()},
                   {"interrupted", r.interrupted()}});
      Broadcast(Sse("result", data), false);
      break;
    }
    case v1::GenerateEvent::kFrame: {
      if (subscribers_.empty()) break;  // images are encoded only for open pages
      const v1::Frame& f = event.frame();
      json data = base;
      data.update({{"index", f.index()}, {"image", DataUri(f.image().mime_type(), f.image().data())},
                   {"plugin", f.plugin()}});
      Broadcast(Sse("frame", data), false);
      break;
    }
    case v1::GenerateEvent::kArtifact: {
      if (subscribers_.empty()) break;  // images are encoded only for open pages
      // Chunked files are joined by the caller (the page gets whole files); here: a whole one.
      const v1::Artifact& a = event.artifact();
      json data = base;
      data.update({{"name", a.name()}, {"mime_type", a.mime_type()}, {"plugin", a.plugin()},
                   {"data", DataUri(a.mime_type(), a.data())}});
      Broadcast(Sse("artifact", data), false);
      break;
    }
    case v1::GenerateEvent::kFinished: {
      job.progress.active = false;
      job.finished = true;
      json data = base;
      data.update({{"state", JobStateName(event.finished().state())}, {"message", event.finished().message()},
                   {"run_seconds", event.finished().run_seconds()}});
      Broadcast(Sse("finished", data), false);
      finished_order_.push_back(id);
      while (finished_order_.size() > kFinishedRemembered) {
        jobs_.erase(finished_order_.front());
        finished_order_.pop_front();
      }
      break;
    }
    default:
      break;
  }
}

void JobBoard::Ended(const std::string& job_id, const std::string& state, const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.finished) return;
  it->second.finished = true;
  it->second.progress.active = false;
  Broadcast(Sse("finished", json{{"job_id", job_id}, {"state", state}, {"message", message}}), false);
  finished_order_.push_back(job_id);
}

ProgressState JobBoard::Progress() const {
  std::lock_guard<std::mutex> lock(mu_);
  const Tracked* best = nullptr;
  for (const auto& [id, job] : jobs_) {
    if (!job.progress.active) continue;
    if (best == nullptr || (job.mine && !best->mine) || (job.mine == best->mine && job.order > best->order)) {
      best = &job;
    }
  }
  return best == nullptr ? ProgressState{} : best->progress;
}

std::string JobBoard::CurrentJob() const {
  const ProgressState p = Progress();
  return p.active ? p.job : std::string();
}

void JobBoard::MarkInterrupted(const std::string& job_id, bool skipped) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  (skipped ? it->second.progress.skipped : it->second.progress.interrupted) = true;
}

std::shared_ptr<Subscription> JobBoard::Subscribe() {
  auto subscription = std::make_shared<Subscription>();
  std::lock_guard<std::mutex> lock(mu_);
  if (!daemon_state_message_.empty()) subscription->Push(daemon_state_message_, false);
  for (const auto& [id, job] : jobs_) {
    if (job.finished) continue;
    subscription->Push(Sse(job.progress.active ? "started" : "queued",
                           json{{"job_id", id}, {"prompt", job.prompt}, {"mine", job.mine}}),
                       false);
    if (job.last_progress.has_progress()) subscription->Push(ProgressMessage(job.last_progress), true);
  }
  subscribers_[subscription.get()] = subscription;
  return subscription;
}

void JobBoard::Unsubscribe(const std::shared_ptr<Subscription>& subscription) {
  subscription->Close();
  std::lock_guard<std::mutex> lock(mu_);
  subscribers_.erase(subscription.get());
}

void JobBoard::DaemonState(bool reachable, const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  daemon_state_message_ = Sse("daemon", json{{"reachable", reachable}, {"message", message}});
  Broadcast(daemon_state_message_, false);
}

bool JobBoard::Tracks(const std::string& job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.count(job_id) > 0;
}

}  // namespace atelier::web
