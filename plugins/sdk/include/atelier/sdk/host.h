// Plugin SDK: the host's device and compute dtype as ATen values (atelier_host_api.device / compute_dtype).
#pragma once

#include <string>

#include <ATen/ATen.h>

#include "atelier/plugin.h"

namespace atelier::sdk {

// "cpu" or "cuda:N" as an at::Device.
inline at::Device HostDevice(const atelier_host_api* host) {
  const std::string device = host->device != nullptr ? host->device : "cpu";
  return device == "cpu" ? at::Device(at::kCPU) : at::Device(device);
}

// The UNet's compute dtype ("float32", "bfloat16", "float16"); models a plugin runs beside it use the same.
inline at::ScalarType HostComputeDtype(const atelier_host_api* host) {
  const std::string dtype = host->compute_dtype != nullptr ? host->compute_dtype : "float32";
  return dtype == "float16" ? at::kHalf : dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
}

}  // namespace atelier::sdk
