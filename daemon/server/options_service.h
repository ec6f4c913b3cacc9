// atelier.v1.Options: WebUI's /sdapi/v1/options for every client of the daemon (server/daemon_options.h keeps them).
#pragma once

#include "atelier/v1/options.grpc.pb.h"
#include "server/caller.h"
#include "server/daemon_options.h"
#include "server/info_services.h"

namespace atelier::server {

class OptionsService final : public v1::Options::CallbackService {
 public:
  // All outlive the service.
  OptionsService(DaemonOptions& options, ModelsService& models, const Callers& callers)
      : options_(options), models_(models), callers_(callers) {}

  grpc::ServerUnaryReactor* GetOptions(grpc::CallbackServerContext* context, const v1::GetOptionsRequest* request,
                                       v1::OptionsResponse* response) override;
  grpc::ServerUnaryReactor* SetOptions(grpc::CallbackServerContext* context, const v1::SetOptionsRequest* request,
                                       v1::OptionsResponse* response) override;

 private:
  void Fill(v1::OptionsResponse* response) const;

  DaemonOptions& options_;
  ModelsService& models_;
  const Callers& callers_;
};

}  // namespace atelier::server
