// The daemon's WebUI options: what GetOptions reports, what Set keeps, what every job takes from them.
#include "server/daemon_options.h"

#include <gtest/gtest.h>

namespace atelier::server {
namespace {

google::protobuf::Value Number(double v) {
  google::protobuf::Value value;
  value.set_number_value(v);
  return value;
}

TEST(DaemonOptionsTest, ValuesSetAreJobDefaultsBeneathTheJobsOwn) {
  DaemonOptions options;
  google::protobuf::Struct changes;
  (*changes.mutable_fields())["CLIP_stop_at_last_layers"] = Number(2);
  (*changes.mutable_fields())["eta_noise_seed_delta"] = Number(31337);
  (*changes.mutable_fields())["an_extension_setting"].set_string_value("kept");
  options.Set(changes);
  const auto snapshot = options.Snapshot().fields();
  EXPECT_EQ(snapshot.at("CLIP_stop_at_last_layers").number_value(), 2);
  EXPECT_EQ(snapshot.at("an_extension_setting").string_value(), "kept");
  EXPECT_EQ(snapshot.at("s_noise").number_value(), 1.0);  // a default nobody set

  v1::GenerateRequest request;
  (*request.mutable_override_settings()->mutable_fields())["eta_noise_seed_delta"] = Number(0);
  options.ApplyTo(request);
  const auto& overrides = request.override_settings().fields();
  EXPECT_EQ(overrides.at("CLIP_stop_at_last_layers").number_value(), 2);  // from the options
  EXPECT_EQ(overrides.at("eta_noise_seed_delta").number_value(), 0);      // the job's own wins
  EXPECT_EQ(overrides.count("an_extension_setting"), 0u);                 // kept, never applied
  EXPECT_EQ(overrides.count("s_noise"), 0u);                              // defaults are not written
}

TEST(DaemonOptionsTest, PostingBackTheSnapshotChangesNothing) {
  DaemonOptions options;
  options.Set(options.Snapshot());
  v1::GenerateRequest request;
  options.ApplyTo(request);
  EXPECT_TRUE(request.override_settings().fields().empty());
  google::protobuf::Struct changes;
  (*changes.mutable_fields())["CLIP_stop_at_last_layers"] = Number(2);
  options.Set(changes);
  (*changes.mutable_fields())["CLIP_stop_at_last_layers"] = Number(1);  // back to the default: cleared
  options.Set(changes);
  options.ApplyTo(request);
  EXPECT_TRUE(request.override_settings().fields().empty());
  EXPECT_TRUE(DaemonOptions::Honoured("CLIP_stop_at_last_layers"));
  EXPECT_FALSE(DaemonOptions::Honoured("an_extension_setting"));
}

}  // namespace
}  // namespace atelier::server
