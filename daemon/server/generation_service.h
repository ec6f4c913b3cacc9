// atelier.v1.Generation: Generate, Watch, Cancel, Skip, ListJobs, Upscale, ListUpscalers.
#pragma once

#include "atelier/v1/generation.grpc.pb.h"
#include "host/plugin_registry.h"
#include "server/caller.h"
#include "server/job_manager.h"
#include "server/job_runner.h"

namespace atelier::server {

class GenerationService final : public v1::Generation::CallbackService {
 public:
  GenerationService(JobManager& jobs, const JobRunner& runner, const host::PluginRegistry& plugins,
                    const Callers& callers)
      : jobs_(jobs), runner_(runner), plugins_(plugins), callers_(callers) {}

  grpc::ServerWriteReactor<v1::GenerateEvent>* Generate(grpc::CallbackServerContext* context,
                                                        const v1::GenerateRequest* request) override;
  grpc::ServerWriteReactor<v1::GenerateEvent>* Watch(grpc::CallbackServerContext* context,
                                                     const v1::WatchRequest* request) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* context, const v1::CancelRequest* request,
                                   v1::CancelResponse* response) override;
  grpc::ServerUnaryReactor* Skip(grpc::CallbackServerContext* context, const v1::SkipRequest* request,
                                 v1::SkipResponse* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context, const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateEvent>* Upscale(grpc::CallbackServerContext* context,
                                                       const v1::UpscaleRequest* request) override;
  grpc::ServerUnaryReactor* ListUpscalers(grpc::CallbackServerContext* context, const v1::ListUpscalersRequest* request,
                                          v1::ListUpscalersResponse* response) override;

 private:
  JobManager& jobs_;
  const JobRunner& runner_;
  const host::PluginRegistry& plugins_;
  const Callers& callers_;
};

}  // namespace atelier::server
