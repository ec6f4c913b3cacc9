#include "gateway.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "webui_json.h"

namespace atelier::web {
namespace {

// The bearer token an HTTP caller sent ("Authorization: Bearer X"); empty otherwise.
std::string BearerOf(const httplib::Request& request) {
  const std::string header = request.get_header_value("Authorization");
  return absl::StartsWithIgnoreCase(header, "Bearer ") ? header.substr(7) : std::string();
}

// Joins an artifact's chunks by name, so the page and the WebUI answers get whole files.
class ArtifactJoiner {
 public:
  // False while `event` holds a chunk before its artifact's last one; true otherwise, with a last chunk replaced by
  // the whole artifact.
  bool Join(v1::GenerateEvent& event) {
    if (!event.has_artifact()) return true;
    v1::Artifact& whole = partial_[event.artifact().name()];
    if (whole.name().empty()) whole = event.artifact();
    else whole.mutable_data()->append(event.artifact().data());
    if (!event.artifact().last()) return false;
    whole.set_last(true);
    *event.mutable_artifact() = std::move(whole);
    partial_.erase(event.artifact().name());
    return true;
  }

 private:
  std::map<std::string, v1::Artifact> partial_;
};

}  // namespace

Gateway::Gateway(std::shared_ptr<grpc::Channel> channel, GatewaySettings settings)
    : channel_(std::move(channel)),
      settings_(std::move(settings)),
      generation_(v1::Generation::NewStub(channel_)),
      models_(v1::Models::NewStub(channel_)),
      options_(v1::Options::NewStub(channel_)),
      plugins_(v1::Plugins::NewStub(channel_)),
      daemon_(v1::Daemon::NewStub(channel_)) {}

void Gateway::CancelAll() {
  stopping_ = true;
  std::lock_guard<std::mutex> lock(watches_mu_);
  for (auto& context : watch_contexts_) context->TryCancel();
}

Gateway::~Gateway() {
  CancelAll();
  if (watcher_.joinable()) watcher_.join();
  std::vector<Worker> workers;
  {
    std::lock_guard<std::mutex> lock(watches_mu_);
    workers.swap(workers_);
  }
  for (auto& worker : workers) worker.thread.join();
}

void Gateway::Background(std::function<void()> work) {
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::lock_guard<std::mutex> lock(watches_mu_);
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
  workers_.push_back(Worker{std::thread([work = std::move(work), done] {
                              work();
                              *done = true;
                            }),
                            done});
}

std::unique_ptr<grpc::ClientContext> Gateway::Context(const httplib::Request& request,
                                                      std::chrono::seconds deadline) const {
  auto context = std::make_unique<grpc::ClientContext>();
  const std::string bearer = BearerOf(request);
  const std::string& token = bearer.empty() ? settings_.token : bearer;
  if (!token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  context->AddMetadata("atelier-client", absl::StrCat("web:", request.remote_addr));
  if (deadline.count() > 0) context->set_deadline(std::chrono::system_clock::now() + deadline);
  return context;
}

GenerationRun Gateway::Generate(const v1::GenerateRequest& request, const httplib::Request& http,
                                const std::function<void(const std::string&)>& on_accepted) {
  GenerationRun run;
  std::shared_ptr<grpc::ClientContext> context = Context(http, std::chrono::seconds(0));
  {
    std::lock_guard<std::mutex> lock(watches_mu_);
    if (stopping_) {
      run.status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the gateway is stopping");
      return run;
    }
    watch_contexts_.push_back(context);
  }
  auto reader = generation_->Generate(context.get(), request);
  v1::GenerateEvent event;
  ArtifactJoiner artifacts;
  bool finished = false;
  while (reader->Read(&event)) {
    if (run.job_id.empty()) {
      run.job_id = event.job_id();
      if (on_accepted) on_accepted(run.job_id);
    }
    if (!artifacts.Join(event)) continue;
    switch (event.event_case()) {
      case v1::GenerateEvent::kStarted:
        run.started = event.started();
        run.started_unix_ms = absl::ToUnixMillis(absl::Now());
        break;
      case v1::GenerateEvent::kResult: run.results.push_back(event.result()); break;
      case v1::GenerateEvent::kFrame: run.frames.push_back(event.frame()); break;
      case v1::GenerateEvent::kArtifact: run.artifacts.push_back(event.artifact()); break;
      case v1::GenerateEvent::kFinished: finished = true; break;
      default: break;
    }
    board_.Publish(event, request.prompt(), true);
  }
  run.status = reader->Finish();
  {
    std::lock_guard<std::mutex> lock(watches_mu_);
    watch_contexts_.erase(std::remove(watch_contexts_.begin(), watch_contexts_.end(), context),
                          watch_contexts_.end());
  }
  if (!finished && !run.job_id.empty()) {
    board_.Ended(run.job_id, run.status.ok() ? "succeeded" : "failed", run.status.error_message());
  }
  return run;
}

grpc::Status Gateway::StopJob(const httplib::Request& http, const std::string& job_id, bool skip) {
  auto context = Context(http);
  if (skip) {
    v1::SkipRequest request;
    request.set_job_id(job_id);
    v1::SkipResponse out;
    return generation_->Skip(context.get(), request, &out);
  }
  v1::CancelRequest request;
  request.set_job_id(job_id);
  v1::CancelResponse out;
  return generation_->Cancel(context.get(), request, &out);
}

void Gateway::Json(httplib::Response& response, const nlohmann::json& body, int code) {
  response.status = code;
  response.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
}

void Gateway::Fail(httplib::Response& response, const grpc::Status& status) {
  const int code = HttpStatusOf(status.error_code());
  std::string detail = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    detail = absl::StrCat("the Atelier daemon is not reachable: ", detail);
    response.set_header("Retry-After", "5");
  }
  Json(response, ErrorBody(code == 422 ? "ValidationError" : "HTTPException", detail), code);
}

void Gateway::StartWatching() { watcher_ = std::thread([this] { WatchLoop(); }); }

void Gateway::WatchLoop() {
  std::set<std::string> watched;
  bool first = true;
  while (!stopping_) {
    grpc::ClientContext context;
    if (!settings_.token.empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", settings_.token));
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListJobsResponse jobs;
    const grpc::Status status = generation_->ListJobs(&context, v1::ListJobsRequest(), &jobs);
    const bool reachable = status.ok() || status.error_code() != grpc::StatusCode::UNAVAILABLE;
    if (reachable != reachable_.load() || first) {
      reachable_ = reachable;
      board_.DaemonState(reachable, reachable ? "" : status.error_message());
      first = false;
    }
    if (status.ok() && settings_.watch_all) {
      for (const v1::JobInfo& job : jobs.jobs()) {
        if (watched.count(job.job_id()) > 0 || board_.Tracks(job.job_id())) continue;
        watched.insert(job.job_id());
        Background([this, id = job.job_id(), prompt = job.prompt()] { WatchJob(id, prompt); });
      }
      if (watched.size() > 4096) watched.clear();
    }
    for (int i = 0; i < 10 && !stopping_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void Gateway::WatchJob(std::string job_id, std::string prompt) {
  auto context = std::make_shared<grpc::ClientContext>();
  if (!settings_.token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", settings_.token));
  {
    std::lock_guard<std::mutex> lock(watches_mu_);
    if (stopping_) return;
    watch_contexts_.push_back(context);
  }
  v1::WatchRequest request;
  request.set_job_id(job_id);
  auto reader = generation_->Watch(context.get(), request);
  v1::GenerateEvent event;
  ArtifactJoiner artifacts;
  while (reader->Read(&event)) {
    if (!artifacts.Join(event)) continue;
    board_.Publish(event, prompt, false);
  }
  const grpc::Status status = reader->Finish();
  board_.Ended(job_id, status.ok() ? "succeeded" : "failed", status.error_message());
  std::lock_guard<std::mutex> lock(watches_mu_);
  watch_contexts_.erase(std::remove(watch_contexts_.begin(), watch_contexts_.end(), context), watch_contexts_.end());
}

}  // namespace atelier::web
