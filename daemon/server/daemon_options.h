// WebUI's global settings (/sdapi/v1/options) as one daemon keeps them for all its clients: the values clients set
// through the Options service, applied to every job beneath the job's own override_settings.
#pragma once

#include <mutex>
#include <string>

#include <google/protobuf/struct.pb.h>

#include "atelier/v1/generation.pb.h"

namespace atelier::server {

class DaemonOptions {
 public:
  // The keys the daemon honours, each with what the daemon does when nobody set it (WebUI's names and, where the
  // daemon behaves as WebUI does by default, WebUI's values; previews default to every step, cheap approximation).
  static const google::protobuf::Struct& Defaults();
  static bool Honoured(const std::string& key);

  // The defaults overlaid with every value set (honoured or only kept).
  google::protobuf::Struct Snapshot() const;
  // Stores `changes` (already checked); a value equal to its default clears the key, so posting back what
  // Snapshot gave changes nothing.
  void Set(const google::protobuf::Struct& changes);
  // Adds the honoured values set here to `request.override_settings` where the request does not name the key.
  void ApplyTo(v1::GenerateRequest& request) const;

 private:
  mutable std::mutex mu_;
  google::protobuf::Struct set_;
};

}  // namespace atelier::server
