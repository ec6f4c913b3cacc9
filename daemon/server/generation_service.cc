#include "server/generation_service.h"

#include "engine/upscale/upscaler_catalog.h"
#include "server/upscale_request.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/grpc_status.h"
#include "server/job_stream.h"
#include "server/request_validation.h"
#include "util/user_text.h"

namespace atelier::server {
namespace {

std::int64_t UnixMillis(absl::Time t) { return t == absl::InfinitePast() ? 0 : absl::ToUnixMillis(t); }

}  // namespace

grpc::ServerWriteReactor<v1::GenerateEvent>* GenerationService::Generate(grpc::CallbackServerContext* context,
                                                                         const v1::GenerateRequest* request) {
  if (!jobs_.accepting()) {
    return JobStream::Reject(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the daemon is shutting down"));
  }
  v1::GenerateRequest prepared = *request;
  runner_.FillDefaultSize(prepared);
  if (absl::Status s = ValidateAndFillDefaults(prepared, runner_.loras()); !s.ok()) return JobStream::Reject(ToGrpcStatus(s));
  options_.ApplyTo(prepared);  // the daemon's options (after the infotext's overrides, beneath the request's own)
  if (absl::Status s = ValidatePluginArgs(prepared, plugins_); !s.ok()) return JobStream::Reject(ToGrpcStatus(s));
  auto parsed = runner_.Prepare(prepared);
  if (!parsed.ok()) return JobStream::Reject(ToGrpcStatus(parsed.status()));

  std::string job_id = prepared.force_task_id();
  auto job = jobs_.Submit(std::move(job_id), callers_.Of(*context), std::move(prepared), *std::move(parsed));
  if (!job.ok()) return JobStream::Reject(ToGrpcStatus(job.status()));
  const std::string id = (*job)->id();
  JobManager* jobs = &jobs_;
  // The submitter's stream going away (disconnect or client-side cancel) cancels the job.
  return JobStream::Attach(*job, EventCursor{}, [jobs, id] { (void)jobs->Cancel(id, "the submitting client disconnected"); });
}

grpc::ServerWriteReactor<v1::GenerateEvent>* GenerationService::Watch(grpc::CallbackServerContext*,
                                                                      const v1::WatchRequest* request) {
  std::shared_ptr<Job> job = jobs_.Find(request->job_id());
  if (job == nullptr) {
    return JobStream::Reject(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                          absl::StrCat("no queued or running job ", Quoted(request->job_id()))));
  }
  const EventCursor cursor = request->skip_history() ? job->LiveCursor() : EventCursor{};
  return JobStream::Attach(std::move(job), cursor, nullptr);
}

grpc::ServerUnaryReactor* GenerationService::Cancel(grpc::CallbackServerContext* context,
                                                    const v1::CancelRequest* request,
                                                    v1::CancelResponse* response) {
  const Caller caller = callers_.Of(*context);
  auto previous = jobs_.Cancel(request->job_id(), "cancelled by a Cancel request", &caller);
  if (!previous.ok()) return FinishUnary(context, ToGrpcStatus(previous.status()));
  response->set_previous_state(*previous);
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GenerationService::Skip(grpc::CallbackServerContext* context,
                                                  const v1::SkipRequest* request, v1::SkipResponse* response) {
  const Caller caller = callers_.Of(*context);
  auto state = jobs_.Skip(request->job_id(), &caller);
  if (!state.ok()) return FinishUnary(context, ToGrpcStatus(state.status()));
  response->set_state(*state);
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GenerationService::ListJobs(grpc::CallbackServerContext* context,
                                                      const v1::ListJobsRequest*, v1::ListJobsResponse* response) {
  const JobManager::Listing listing = jobs_.List();
  auto add = [response](const Job& job, int position) {
    v1::JobInfo* info = response->add_jobs();
    info->set_job_id(job.id());
    info->set_client_id(job.client_id());
    info->set_state(job.state());
    info->set_position(position);
    info->set_submitted_unix_ms(UnixMillis(job.submitted_at()));
    info->set_started_unix_ms(UnixMillis(job.started_at()));
    info->set_progress(job.progress());
    info->set_streams(job.ObserverCount());
    info->set_prompt(job.request().prompt().substr(0, 200));
  };
  if (listing.running) add(*listing.running, -1);
  for (size_t i = 0; i < listing.queued.size(); ++i) add(*listing.queued[i], static_cast<int>(i));
  response->set_max_queue(jobs_.max_queue());
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerWriteReactor<v1::GenerateEvent>* GenerationService::Upscale(grpc::CallbackServerContext* context,
                                                                        const v1::UpscaleRequest* request) {
  if (!jobs_.accepting()) {
    return JobStream::Reject(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the daemon is shutting down"));
  }
  auto prepared = PrepareUpscale(*request, runner_.folders());
  if (!prepared.ok()) return JobStream::Reject(ToGrpcStatus(prepared.status()));
  // The job's request only describes it in ListJobs; the work is the prepared upscale.
  v1::GenerateRequest described;
  described.set_prompt(absl::StrCat("upscale ", request->images_size(), " image(s) with ", (*prepared)->settings.upscaler_1));
  auto job = jobs_.Submit(request->force_task_id(), callers_.Of(*context), std::move(described), *std::move(prepared));
  if (!job.ok()) return JobStream::Reject(ToGrpcStatus(job.status()));
  const std::string id = (*job)->id();
  JobManager* jobs = &jobs_;
  return JobStream::Attach(*job, EventCursor{}, [jobs, id] { (void)jobs->Cancel(id, "the submitting client disconnected"); });
}

grpc::ServerUnaryReactor* GenerationService::ListUpscalers(grpc::CallbackServerContext* context,
                                                           const v1::ListUpscalersRequest*,
                                                           v1::ListUpscalersResponse* response) {
  for (const engine::UpscalerEntry& e : engine::UpscalerCatalog(runner_.folders()).List()) {
    v1::Upscaler* u = response->add_upscalers();
    u->set_name(e.name);
    u->set_filename(e.filename);
    u->set_missing_file(e.missing_file);
    u->set_url(e.url);
  }
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace atelier::server
