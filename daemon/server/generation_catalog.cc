// Generation's lookups that run no job: WebUI's sampler and scheduler lists and an image's generation parameters.
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/pipeline/infotext_parse.h"
#include "engine/sampling/sampler_table.h"
#include "engine/sampling/schedulers.h"
#include "image/image_codec.h"
#include "image/image_formats.h"
#include "server/generation_service.h"
#include "server/grpc_status.h"

namespace atelier::server {

grpc::ServerUnaryReactor* GenerationService::ListSamplers(grpc::CallbackServerContext* context,
                                                          const v1::ListSamplersRequest*,
                                                          v1::ListSamplersResponse* response) {
  for (const engine::SamplerInfo& info : engine::AllSamplers()) {
    v1::SamplerDescription* out = response->add_samplers();
    out->set_name(info.name);
    for (const char* alias : info.aliases) out->add_aliases(alias);
    // WebUI's sampler options, as its API's dict[str, str] prints them.
    if (info.default_scheduler) {
      (*out->mutable_options())["scheduler"] = engine::SchedulerName(*info.default_scheduler);
    }
    for (const auto& [flag, key] : {std::pair<bool, const char*>{info.discard_next_to_last_sigma,
                                                                 "discard_next_to_last_sigma"},
                                    {info.second_order, "second_order"},
                                    {info.brownian_noise, "brownian_noise"},
                                    {info.uses_ensd && !info.timesteps, "uses_ensd"}}) {
      if (flag) (*out->mutable_options())[key] = "True";
    }
  }
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GenerationService::ListSchedulers(grpc::CallbackServerContext* context,
                                                            const v1::ListSchedulersRequest*,
                                                            v1::ListSchedulersResponse* response) {
  for (const engine::SchedulerInfo& info : engine::AllSchedulers()) {
    v1::SchedulerDescription* out = response->add_schedulers();
    out->set_name(info.name);
    out->set_label(info.label);
    if (info.alias != nullptr) out->add_aliases(info.alias);
    if (info.default_rho >= 0) out->set_default_rho(info.default_rho);
    out->set_need_inner_model(info.need_inner_model);
  }
  return FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GenerationService::ReadImageInfo(grpc::CallbackServerContext* context,
                                                           const v1::ReadImageInfoRequest* request,
                                                           v1::ImageInfo* response) {
  auto infotext = engine::ReadInfotext(request->image());
  if (!infotext.ok()) return FinishUnary(context, ToGrpcStatus(infotext.status()));
  response->set_infotext(*infotext);
  if (engine::SniffImageFormat(request->image()) == engine::ImageFileFormat::kPng) {
    if (auto chunks = engine::ReadPngText(request->image()); chunks.ok()) {
      for (const engine::PngText& chunk : *chunks) {
        if (chunk.key != "parameters") (*response->mutable_items())[chunk.key] = chunk.value;
      }
    }
  }
  if (!infotext->empty()) {
    const engine::ParsedInfotext parsed = engine::ParseInfotext(*infotext);
    auto& fields = *response->mutable_parameters()->mutable_fields();
    fields["Prompt"].set_string_value(parsed.prompt);
    fields["Negative prompt"].set_string_value(parsed.negative_prompt);
    for (const auto& [key, value] : parsed.params) fields[key].set_string_value(value);
  }
  return FinishUnary(context, grpc::Status::OK);
}

}  // namespace atelier::server
