// atelier.v1.Generation: Generate, Watch, Cancel, Skip, ListJobs, Upscale, ListUpscalers; the samplers, schedulers
// and image-info lookups in generation_catalog.cc.
#pragma once

#include "atelier/v1/generation.grpc.pb.h"
#include "host/plugin_registry.h"
#include "server/caller.h"
#include "server/daemon_options.h"
#include "server/job_manager.h"
#include "server/job_runner.h"

namespace atelier::server {

class GenerationService final : public v1::Generation::CallbackService {
 public:
  GenerationService(JobManager& jobs, const JobRunner& runner, const host::PluginRegistry& plugins,
                    const Callers& callers, const DaemonOptions& options)
      : jobs_(jobs), runner_(runner), plugins_(plugins), callers_(callers), options_(options) {}

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
  // generation_catalog.cc
  grpc::ServerUnaryReactor* ListSamplers(grpc::CallbackServerContext* context, const v1::ListSamplersRequest* request,
                                         v1::ListSamplersResponse* response) override;
  grpc::ServerUnaryReactor* ListSchedulers(grpc::CallbackServerContext* context,
                                           const v1::ListSchedulersRequest* request,
                                           v1::ListSchedulersResponse* response) override;
  grpc::ServerUnaryReactor* ReadImageInfo(grpc::CallbackServerContext* context, const v1::ReadImageInfoRequest* request,
                                          v1::ImageInfo* response) override;

 private:
  JobManager& jobs_;
  const JobRunner& runner_;
  const host::PluginRegistry& plugins_;
  const Callers& callers_;
  const DaemonOptions& options_;
};

}  // namespace atelier::server
