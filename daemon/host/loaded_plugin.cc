#include "host/loaded_plugin.h"

#include <dlfcn.h>

namespace atelier::host {

Plugin::~Plugin() {
  if (initialized_ && descriptor_.finalize != nullptr) descriptor_.finalize(state_);
  if (handle_ != nullptr) dlclose(handle_);
}

std::vector<std::string> Plugin::HookNames() const {
  std::vector<std::string> names;
  const auto& d = descriptor_;
  if (d.model_loaded) names.push_back("model_loaded");
  if (d.process) names.push_back("process");
  if (d.cfg_denoiser) names.push_back("cfg_denoiser");
  if (d.cfg_denoised) names.push_back("cfg_denoised");
  if (d.cfg_after_cfg) names.push_back("cfg_after_cfg");
  if (d.unet_residuals) names.push_back("unet_residuals");
  if (d.unet_block) names.push_back("unet_block");
  if (d.postprocess_frames) names.push_back("postprocess_frames");
  if (d.export_media) names.push_back("export");
  if (d.model_unloaded) names.push_back("model_unloaded");
  if (d.shape_job) names.push_back("shape_job");
  if (d.schedule) names.push_back("schedule");
  if (d.pass_started) names.push_back("pass_started");
  if (d.model_call) names.push_back("model_call");
  if (d.frame) names.push_back("frame");
  if (d.frames_finish) names.push_back("frames_finish");
  if (d.invoke) names.push_back("invoke");
  return names;
}

}  // namespace atelier::host
