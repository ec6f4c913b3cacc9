// Plugins.Invoke: a plugin's work outside a generation runs as a job (queued with the others, cancellable,
// streaming its progress and artifacts), with the ABI 1.1 host services it needs: the image codec, pickles through
// tensor_file_open, call_plugin, and artifacts larger than the message limit in chunks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "atelier/v1/generation.grpc.pb.h"
#include "atelier/v1/plugins.grpc.pb.h"
#include "engine/io/model_folders.h"
#include "event_stream.h"
#include "fixture_case.h"
#include "image/image_formats.h"
#include "server/daemon_server.h"
#include "test_job_runner.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::atelier::v1;
using ::testing::HasSubstr;
using namespace std::chrono_literals;
using testing::Stream;

constexpr int kMessageLimit = 256 * 1024;

class PluginInvokeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(root_.path() / "models/ControlNet");
    auto folders = engine::ModelFolders::Open(root_.path());
    ASSERT_TRUE(folders.ok()) << folders.status();
    folders_ = std::make_unique<engine::ModelFolders>(*std::move(folders));
    testing::CopyPlugin(testing::TestPlugin("probe_v11"), plugins_dir_.path(), "probe_v11.so");
    testing::CopyPlugin(testing::BuiltPlugin("invert"), plugins_dir_.path(), "invert.so");
    host::PluginLoaderOptions options;
    options.environment.host_version = "test";
    options.environment.device = "cpu";
    options.environment.model_folders = folders_.get();
    plugins_ = host::PluginRegistry::LoadDirectory(plugins_dir_.path(), std::move(options));
    ASSERT_EQ(plugins_->plugins().size(), 2u);
    runner_ = std::make_unique<testing::TestJobRunner>(plugins_.get());
    server::DaemonServerOptions server_options;
    server_options.listen = "127.0.0.1:0";
    server_options.max_message_bytes = kMessageLimit;
    server::DaemonFacts facts;
    facts.version = "test";
    facts.runtime.device = "cpu";
    facts.started_at = absl::Now();
    auto started = server::DaemonServer::Start(server_options, *runner_, *plugins_, models_, facts);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = *std::move(started);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args);
    plugins_stub_ = v1::Plugins::NewStub(channel_);
    generation_ = v1::Generation::NewStub(channel_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
  }

  std::unique_ptr<Stream> Invoke(const std::string& plugin, const std::string& method, const std::string& args) {
    v1::InvokeRequest request;
    request.set_plugin(plugin);
    request.set_method(method);
    request.set_args_json(args);
    auto stream = std::make_unique<Stream>();
    stream->context.AddMetadata("atelier-client", "invoker");
    stream->Start(plugins_stub_->Invoke(&stream->context, request));
    return stream;
  }

  static const v1::Finished& FinishedOf(const Stream::Events& events) { return events.back().finished(); }

  testing::TempDir root_, plugins_dir_;
  std::unique_ptr<engine::ModelFolders> folders_;
  engine::ModelManager models_{nullptr, "", engine::LoadOptions()};
  std::unique_ptr<host::PluginRegistry> plugins_;
  std::unique_ptr<testing::TestJobRunner> runner_;
  std::unique_ptr<server::DaemonServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Plugins::Stub> plugins_stub_;
  std::unique_ptr<v1::Generation::Stub> generation_;
};

TEST_F(PluginInvokeTest, RunsAsAJobAndReturnsTheResult) {
  auto stream = Invoke("PROBE_V11", "echo", R"({"x": [1, 2]})");
  ASSERT_TRUE(stream->Wait().ok());
  const auto events = stream->events();
  ASSERT_TRUE(events.back().has_finished());
  EXPECT_EQ(FinishedOf(events).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(FinishedOf(events).invoke_result_json(), R"({"x": [1, 2]})");
  EXPECT_FALSE(events.front().job_id().empty());
}

TEST_F(PluginInvokeTest, ImageCodecRoundTripsThroughTheHost) {
  auto stream = Invoke("probe_v11", "encode", "");
  ASSERT_TRUE(stream->Wait().ok());
  const auto events = stream->events();
  EXPECT_EQ(FinishedOf(events).invoke_result_json(), R"({"w": 4, "h": 4, "c": 3})");
  const auto png = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_artifact(); });
  ASSERT_NE(png, events.end());
  EXPECT_EQ(png->artifact().name(), "tiny.png");
  auto infotext = engine::ReadInfotext(png->artifact().data());
  ASSERT_TRUE(infotext.ok()) << infotext.status();
  EXPECT_EQ(*infotext, "probe infotext");
  auto decoded = engine::DecodeImage(png->artifact().data());
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->width, 4);
  EXPECT_EQ(decoded->pixels[0], 0);  // value 0 -> 0, value 1/15 -> 17
  EXPECT_EQ(decoded->pixels[3], 17);
}

TEST_F(PluginInvokeTest, ArtifactsOverTheMessageLimitArriveInChunks) {
  const size_t size = 3 * kMessageLimit + 12345;
  auto stream = Invoke("probe_v11", "big", std::to_string(size));
  ASSERT_TRUE(stream->Wait().ok());
  std::string joined;
  int chunks = 0;
  for (const auto& e : stream->events()) {
    if (!e.has_artifact()) continue;
    const v1::Artifact& a = e.artifact();
    EXPECT_EQ(a.offset(), joined.size());
    EXPECT_EQ(a.total_size(), size);
    EXPECT_LT(e.ByteSizeLong(), static_cast<size_t>(kMessageLimit));
    joined += a.data();
    ++chunks;
    EXPECT_EQ(a.last(), joined.size() == size);
  }
  EXPECT_GE(chunks, 4);
  ASSERT_EQ(joined.size(), size);
  for (size_t i = 0; i < size; i += 4099) ASSERT_EQ(joined[i], static_cast<char>('a' + (i * 7 + i / 1000) % 26)) << i;
}

TEST_F(PluginInvokeTest, CallPluginRunsAnotherPluginsInvokeInTheSameJob) {
  auto stream = Invoke("probe_v11", "call", "{}");
  ASSERT_TRUE(stream->Wait().ok());
  const auto events = stream->events();
  const auto called = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_artifact(); });
  ASSERT_NE(called, events.end());
  EXPECT_EQ(called->artifact().name(), "called.txt");
  EXPECT_EQ(called->artifact().plugin(), "probe_v11");
  // The callee's result comes back to the caller, which made it its own.
  EXPECT_EQ(FinishedOf(events).invoke_result_json(), R"({"called": true})");
  // A plugin calling itself without end is stopped with an error, not a stack overflow.
  auto loop = Invoke("probe_v11", "loop", "");
  const grpc::Status status = loop->Wait();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("nests deeper than 8"));
}

TEST_F(PluginInvokeTest, InvokeResultsMustBeJson) {
  auto stream = Invoke("probe_v11", "echo_raw", "");
  const grpc::Status status = stream->Wait();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("set_invoke_result: not a JSON value"));
}

TEST_F(PluginInvokeTest, CancelStopsAnInvokeAndReportsProgressMeanwhile) {
  auto stream = Invoke("probe_v11", "wait", "");
  ASSERT_TRUE(stream->WaitFor([](const auto& events) {
    return std::any_of(events.begin(), events.end(), [](const auto& e) { return e.has_progress(); });
  }));
  const auto events = stream->events();
  const auto progress = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_progress(); });
  EXPECT_EQ(progress->progress().pass(), "waiting");
  grpc::ClientContext context;
  v1::CancelRequest cancel;
  cancel.set_job_id(stream->job_id());
  v1::CancelResponse response;
  ASSERT_TRUE(generation_->Cancel(&context, cancel, &response).ok());
  const grpc::Status status = stream->Wait(5s);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
}

TEST_F(PluginInvokeTest, InvokesWaitInTheQueueBehindRunningJobs) {
  v1::GenerateRequest slow;
  slow.set_prompt("blocker");
  slow.set_steps(40);
  auto blocker = std::make_unique<Stream>();
  blocker->Start(generation_->Generate(&blocker->context, slow));
  ASSERT_TRUE(blocker->WaitFor([](const auto& e) { return !e.empty(); }));
  auto invoke = Invoke("probe_v11", "echo", "1");
  ASSERT_TRUE(invoke->WaitFor([](const auto& events) {
    return std::any_of(events.begin(), events.end(), [](const auto& e) { return e.has_queued(); });
  }));
  ASSERT_TRUE(invoke->Wait().ok());
  ASSERT_TRUE(blocker->Wait().ok());
  // The invoke finished after the job ahead of it.
  EXPECT_GE(FinishedOf(invoke->events()).queued_seconds(), 0.0);
  EXPECT_EQ(runner_->run_order().front(), "blocker");
}

TEST_F(PluginInvokeTest, BadRequestsNameTheChoices) {
  auto unknown = Invoke("nope", "echo", "");
  grpc::Status status = unknown->Wait();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("plugins with an invoke entry: probe_v11"));
  auto no_invoke = Invoke("invert", "x", "");
  status = no_invoke->Wait();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("works only inside a generation"));
  auto bad_json = Invoke("probe_v11", "echo", "{nope");
  EXPECT_EQ(bad_json->Wait().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto bad_method = Invoke("probe_v11", "dance", "");
  status = bad_method->Wait();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("no method 'dance' (echo, emit"));
}

// tensor_file_open reads PyTorch pickles too (ControlNet .pth, motion .ckpt), through the non-executing reader.
TEST_F(PluginInvokeTest, TensorFileOpenReadsPickles) {
  const fs::path dir = testing::FixturesDir() / "ckpt-formats";
  ASSERT_TRUE(fs::exists(dir / "zip_state_dict.ckpt")) << testing::NoCaseMessage("ckpt-formats");
  fs::copy_file(dir / "zip_state_dict.ckpt", root_.path() / "models/ControlNet/control_pickle.pth");
  fs::copy_file(dir / "evil.ckpt", root_.path() / "models/ControlNet/evil.pth");
  auto stream = Invoke("probe_v11", "read", R"("control_pickle.pth")");
  ASSERT_TRUE(stream->Wait().ok()) << stream->Wait().error_message();
  const std::string result = FinishedOf(stream->events()).invoke_result_json();
  EXPECT_THAT(result, HasSubstr("\"count\": "));
  EXPECT_THAT(result, ::testing::Not(HasSubstr("\"count\": 0")));
  // A pickle that would run code is refused, not run.
  auto evil = Invoke("probe_v11", "read", R"("evil.pth")");
  const grpc::Status status = evil->Wait();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.error_message(), HasSubstr("plugin 'probe_v11' failed in invoke"));
}

}  // namespace
}  // namespace atelier
