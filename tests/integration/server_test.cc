// The real gRPC server on 127.0.0.1:0 with real channels, running the test-only job type: health, reflection,
// listings, streaming order, admission errors, fair queueing, cancel/disconnect/skip, slow readers, Watch, plugin
// errors and graceful shutdown.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <thread>

#include "atelier/plugin.h"
#include "atelier/v1/daemon.grpc.pb.h"
#include "atelier/v1/generation.grpc.pb.h"
#include "atelier/v1/plugins.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/daemon_server.h"
#include "test_job_runner.h"
#include "event_stream.h"
#include "test_support.h"
#include "util/limits.h"

namespace atelier {
namespace {

namespace v1 = ::atelier::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

using Clock = std::chrono::steady_clock;
using testing::Count;
using testing::Stream;

bool HasProgress(const Stream::Events& events) { return Count(events, v1::GenerateEvent::kProgress) > 0; }

v1::GenerateRequest TestRequest(const std::string& label, int steps, int step_ms = 5) {
  v1::GenerateRequest request;
  request.set_prompt(label);
  request.set_steps(steps);
  request.set_seed(1000);
  (*request.mutable_override_settings()->mutable_fields())["test_step_ms"].set_number_value(step_ms);
  return request;
}

void SetSetting(v1::GenerateRequest& request, const std::string& key, double value) {
  (*request.mutable_override_settings()->mutable_fields())[key].set_number_value(value);
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(8); }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
  }

  void StartServer(int max_queue, double max_job_seconds = 0) {
    testing::CopyPlugin(testing::BuiltPlugin("invert"), plugins_dir_.path(), "invert.so");
    testing::CopyPlugin(testing::TestPlugin("hook_probe"), plugins_dir_.path(), "hook_probe.so");
    testing::CopyPlugin(testing::TestPlugin("abi_major"), plugins_dir_.path(), "abi_major.so");
    host::PluginLoaderOptions options;
    options.environment.host_version = "test";
    options.environment.device = "cpu";
    plugins_ = host::PluginRegistry::LoadDirectory(plugins_dir_.path(), std::move(options));
    runner_ = std::make_unique<testing::TestJobRunner>(plugins_.get());
    server::DaemonServerOptions server_options;
    server_options.listen = "127.0.0.1:0";
    server_options.max_queue = max_queue;
    server_options.max_job_seconds = max_job_seconds;
    server::DaemonFacts facts;
    facts.version = "9.9.9";
    facts.runtime.device = "cpu";
    facts.started_at = absl::Now();
    auto started = server::DaemonServer::Start(server_options, *runner_, *plugins_, models_, facts);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = *std::move(started);
    ASSERT_GT(server_->port(), 0);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args);
    generation_ = v1::Generation::NewStub(channel_);
  }

  std::unique_ptr<Stream> Submit(const v1::GenerateRequest& request, const std::string& client = "client-a",
                                 std::chrono::milliseconds delay_per_read = 0ms) {
    auto stream = std::make_unique<Stream>();
    stream->context.AddMetadata("atelier-client", client);
    stream->Start(generation_->Generate(&stream->context, request), delay_per_read);
    return stream;
  }

  std::unique_ptr<Stream> WatchJob(const std::string& job_id, bool skip_history = false) {
    auto stream = std::make_unique<Stream>();
    stream->context.AddMetadata("atelier-client", "watcher");
    v1::WatchRequest request;
    request.set_job_id(job_id);
    request.set_skip_history(skip_history);
    stream->Start(generation_->Watch(&stream->context, request));
    return stream;
  }

  grpc::Status Cancel(const std::string& job_id) {
    grpc::ClientContext context;
    v1::CancelRequest request;
    request.set_job_id(job_id);
    v1::CancelResponse response;
    return generation_->Cancel(&context, request, &response);
  }

  v1::ListJobsResponse ListJobs() {
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    EXPECT_TRUE(generation_->ListJobs(&context, v1::ListJobsRequest(), &response).ok());
    return response;
  }

  // Waits until no job is queued or running.
  bool WaitIdle(std::chrono::milliseconds timeout = 10s) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (ListJobs().jobs().empty()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

  grpc::health::v1::HealthCheckResponse::ServingStatus Health(const std::string& service, grpc::Status* status) {
    auto stub = grpc::health::v1::Health::NewStub(channel_);
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    *status = stub->Check(&context, request, &response);
    return response.status();
  }

  testing::TempDir plugins_dir_;
  engine::ModelManager models_{nullptr, "", engine::LoadOptions()};
  std::unique_ptr<host::PluginRegistry> plugins_;
  std::unique_ptr<testing::TestJobRunner> runner_;
  std::unique_ptr<server::DaemonServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> generation_;
};

TEST_F(ServerTest, HealthIsServingForTheServerAndEachService) {
  grpc::Status status;
  EXPECT_EQ(Health("", &status), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_TRUE(status.ok());
  for (const char* service : {"atelier.v1.Generation", "atelier.v1.Models", "atelier.v1.Plugins", "atelier.v1.Daemon"}) {
    EXPECT_EQ(Health(service, &status), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  Health("no.such.Service", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

// Lists services through the standard reflection protocol (what grpcurl does), with the wire format decoded by
// hand so the test depends on nothing but the protocol.
TEST_F(ServerTest, ReflectionListsEveryService) {
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 10s);
  auto call = stub.PrepareCall(&context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](int expected_tag) {
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(tag, reinterpret_cast<void*>(expected_tag));
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  // ServerReflectionRequest { list_services (field 7) = "" }
  const std::string request_bytes("\x3a\x00", 2);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(3));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(step(4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  ASSERT_TRUE(status.ok()) << status.error_message();

  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // ServerReflectionResponse.list_services_response (6) -> ListServiceResponse.service (1) -> ServiceResponse.name (1)
  google::protobuf::UnknownFieldSet top;
  ASSERT_TRUE(top.ParseFromString(bytes));
  std::vector<std::string> names;
  for (int i = 0; i < top.field_count(); ++i) {
    if (top.field(i).number() != 6) continue;
    google::protobuf::UnknownFieldSet list;
    ASSERT_TRUE(list.ParseFromString(top.field(i).length_delimited()));
    for (int j = 0; j < list.field_count(); ++j) {
      google::protobuf::UnknownFieldSet service;
      ASSERT_TRUE(service.ParseFromString(list.field(j).length_delimited()));
      names.push_back(service.field(0).length_delimited());
    }
  }
  EXPECT_THAT(names, ::testing::IsSupersetOf({"atelier.v1.Generation", "atelier.v1.Models", "atelier.v1.Plugins",
                                               "atelier.v1.Daemon", "grpc.health.v1.Health"}));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(ServerTest, PluginsListsLoadedAndRefused) {
  auto stub = v1::Plugins::NewStub(channel_);
  grpc::ClientContext context;
  v1::ListPluginsResponse response;
  ASSERT_TRUE(stub->ListPlugins(&context, v1::ListPluginsRequest(), &response).ok());
  ASSERT_EQ(response.plugins_size(), 2);
  EXPECT_EQ(response.plugins(0).name(), "hook_probe");
  EXPECT_EQ(response.plugins(1).name(), "invert");
  EXPECT_THAT(response.plugins(1).hooks(), ElementsAre("process", "frame"));
  EXPECT_THAT(response.plugins(1).params_schema_json(), HasSubstr("strength"));
  EXPECT_EQ(response.plugins(1).abi_major(), 1u);
  ASSERT_EQ(response.refused_size(), 1);
  EXPECT_EQ(response.refused(0).file(), "abi_major.so");
  EXPECT_THAT(response.refused(0).reason(), HasSubstr("ABI 2." + std::to_string(ATELIER_PLUGIN_ABI_MINOR)));
  EXPECT_EQ(response.abi_major(), static_cast<uint32_t>(ATELIER_PLUGIN_ABI_MAJOR));
}

TEST_F(ServerTest, DaemonInfoReportsVersionAndLimits) {
  auto stub = v1::Daemon::NewStub(channel_);
  grpc::ClientContext context;
  v1::DaemonInfo info;
  ASSERT_TRUE(stub->GetInfo(&context, v1::GetInfoRequest(), &info).ok());
  EXPECT_EQ(info.version(), "9.9.9");
  EXPECT_EQ(info.api_version(), "atelier.v1");
  EXPECT_EQ(info.limits().max_queue(), 8);
  EXPECT_EQ(info.limits().max_image_side(), kMaxImageSide);
}

TEST_F(ServerTest, GenerateStreamsEventsInOrder) {
  v1::GenerateRequest request = TestRequest("hello", 5);
  SetSetting(request, "test_results", 2);
  auto stream = Submit(request);
  ASSERT_TRUE(stream->Wait().ok());
  const auto events = stream->events();
  ASSERT_GE(events.size(), 4u);
  // Sequence numbers grow; every event names the job.
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_GT(events[i].sequence(), events[i - 1].sequence());
    EXPECT_EQ(events[i].job_id(), events[0].job_id());
  }
  EXPECT_EQ(events[0].job_id().size(), 32u);
  const auto started = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_started(); });
  ASSERT_NE(started, events.end());
  EXPECT_THAT(started->started().all_seeds(), ElementsAre(1000, 1001));
  EXPECT_EQ(Count(events, v1::GenerateEvent::kResult), 2);
  EXPECT_GE(Count(events, v1::GenerateEvent::kProgress), 1);
  ASSERT_TRUE(events.back().has_finished());
  const v1::Finished& finished = events.back().finished();
  EXPECT_EQ(finished.state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_GE(finished.timings_size(), 1);
  EXPECT_EQ(finished.timings(0).stage(), "sampling");
  EXPECT_GT(finished.timings(0).seconds(), 0.0);
  // Progress ends at 1.0 with an ETA of 0.
  const auto last_progress = std::find_if(events.rbegin(), events.rend(), [](const auto& e) { return e.has_progress(); });
  EXPECT_FLOAT_EQ(last_progress->progress().progress(), 1.0f);
  EXPECT_EQ(last_progress->progress().sampling_steps(), 5);
}

TEST_F(ServerTest, BadRequestsAreRejectedAtOnceWithTheReason) {
  struct Case {
    std::function<void(v1::GenerateRequest&)> edit;
    grpc::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& r) { r.set_width(100000); }, grpc::StatusCode::INVALID_ARGUMENT, "width 100000 is not allowed"},
      {[](auto& r) { r.set_height(511); }, grpc::StatusCode::INVALID_ARGUMENT, "multiple of 8"},
      {[](auto& r) { r.set_steps(-1); }, grpc::StatusCode::INVALID_ARGUMENT, "steps -1 is not allowed: use 1 to 1000"},
      {[](auto& r) { r.set_batch_size(10000); }, grpc::StatusCode::INVALID_ARGUMENT, "at most 256 images per job"},
      {[](auto& r) { r.set_cfg_scale(NAN); }, grpc::StatusCode::INVALID_ARGUMENT, "cfg_scale"},
      {[](auto& r) { r.set_denoising_strength(1.5); }, grpc::StatusCode::INVALID_ARGUMENT, "denoising_strength"},
      {[](auto& r) { r.set_prompt(std::string(5 << 20, 'a')); }, grpc::StatusCode::INVALID_ARGUMENT, "prompt is 5242880 bytes"},
      {[](auto& r) { r.set_mode(v1::MODE_IMG2IMG); }, grpc::StatusCode::INVALID_ARGUMENT, "init_images"},
      {[](auto& r) { (*r.mutable_alwayson_scripts()->mutable_fields())["controlnet"].set_bool_value(true); },
       grpc::StatusCode::INVALID_ARGUMENT, "always on script 'controlnet' not found; loaded plugins: hook_probe, invert"},
      {[](auto& r) { r.set_force_task_id("bad id/with slash"); }, grpc::StatusCode::INVALID_ARGUMENT, "force_task_id"},
      {[](auto& r) { r.set_prompt("reject me"); }, grpc::StatusCode::INVALID_ARGUMENT, "the test runner rejects"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest request = TestRequest("ok", 2);
    c.edit(request);
    auto stream = Submit(request);
    const grpc::Status status = stream->Wait(5s);
    EXPECT_EQ(status.error_code(), c.code) << c.message << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
    EXPECT_TRUE(stream->events().empty());
  }
  // Plugin names match case-insensitively, and an empty prompt is valid.
  v1::GenerateRequest request = TestRequest("", 2);
  (*request.mutable_alwayson_scripts()->mutable_fields())["INVERT"].mutable_struct_value();
  EXPECT_TRUE(Submit(request)->Wait().ok());
}

// Requests that cannot be parsed never reach a handler; they are answered INVALID_ARGUMENT naming the RPC, the
// request type and the reason (which field is not UTF-8), never gRPC's empty UNIMPLEMENTED and never the bytes sent.
TEST_F(ServerTest, UnparseableRequestsAreInvalidArgumentWithTheReason) {
  auto raw_call = [&](const std::string& method, const std::string& bytes) {
    grpc::GenericStub stub(channel_);
    grpc::CompletionQueue cq;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    auto call = stub.PrepareUnaryCall(&context, method, request, &cq);
    call->StartCall();
    grpc::ByteBuffer response;
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
    return status;
  };
  // A length-delimited field holding `value`, encoded by hand (field numbers below 16, lengths below 2^21).
  auto field = [](int number, const std::string& value) {
    std::string out(1, static_cast<char>((number << 3) | 2));
    for (std::size_t n = value.size(); ; n >>= 7) {
      out.push_back(static_cast<char>((n & 0x7f) | (n >= 0x80 ? 0x80 : 0)));
      if (n < 0x80) break;
    }
    return out + value;
  };
  const std::string garbage("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11);
  const std::string not_utf8 = std::string(300000, 'a') + "\xff\xfe";

  struct Case {
    std::string method, bytes, message;
  };
  const std::vector<Case> cases = {
      {"/atelier.v1.Generation/Generate", garbage,
       "/atelier.v1.Generation/Generate: the atelier.v1.GenerateRequest could not be parsed"},
      {"/atelier.v1.Generation/Cancel", garbage, "atelier.v1.CancelRequest could not be parsed"},
      {"/atelier.v1.Daemon/GetInfo", garbage, "atelier.v1.GetInfoRequest could not be parsed"},
      {"/atelier.v1.Generation/Generate", field(v1::GenerateRequest::kPromptFieldNumber, not_utf8),
       "string field 'atelier.v1.GenerateRequest.prompt' is not valid UTF-8"},
      {"/atelier.v1.Generation/Generate", field(v1::GenerateRequest::kNegativePromptFieldNumber, "\xc3\x28"),
       "string field 'atelier.v1.GenerateRequest.negative_prompt' is not valid UTF-8"},
      {"/atelier.v1.Generation/Cancel", field(v1::CancelRequest::kJobIdFieldNumber, not_utf8),
       "'atelier.v1.CancelRequest.job_id' is not valid UTF-8"},
  };
  for (const Case& c : cases) {
    const grpc::Status status = raw_call(c.method, c.bytes);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
    EXPECT_LT(status.error_message().size(), 600u);  // the bytes sent are never echoed
  }

  // alwayson_scripts nested 40 levels deep: 120 messages, past protobuf's limit of 100.
  v1::GenerateRequest deep = TestRequest("deep", 2);
  google::protobuf::Struct* level = deep.mutable_alwayson_scripts();
  for (int i = 0; i < 40; ++i) level = (*level->mutable_fields())["x"].mutable_struct_value();
  grpc::Status status = raw_call("/atelier.v1.Generation/Generate", deep.SerializeAsString());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("nested deeper than protobuf's limit of 100"));

  // Parseable requests keep their own answers, and an unknown method is still UNIMPLEMENTED.
  v1::CancelRequest cancel;
  cancel.set_job_id("no-such-job");
  EXPECT_EQ(raw_call("/atelier.v1.Generation/Cancel", cancel.SerializeAsString()).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(raw_call("/atelier.v1.Generation/NoSuchMethod", "").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  // The daemon still serves.
  EXPECT_TRUE(Submit(TestRequest("after", 2))->Wait(10s).ok());
}

TEST_F(ServerTest, ForcedTaskIdIsUsedAndMustBeUnique) {
  v1::GenerateRequest request = TestRequest("forced", 1000, 5);
  request.set_force_task_id("task(abc123)");
  auto first = Submit(request);
  ASSERT_TRUE(first->WaitFor(HasProgress));
  EXPECT_EQ(first->job_id(), "task(abc123)");
  auto second = Submit(request);
  EXPECT_EQ(second->Wait().error_code(), grpc::StatusCode::ALREADY_EXISTS);
  ASSERT_TRUE(Cancel("task(abc123)").ok());
  EXPECT_EQ(first->Wait().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(ServerTest, QueueIsFairAcrossClientsAndReportsPositions) {
  auto blocker = Submit(TestRequest("blocker", 1000, 5), "A");
  ASSERT_TRUE(blocker->WaitFor(HasProgress));
  // Separate calls may reach the server in any order: submit each once the previous one is queued.
  auto is_queued = [](const auto& e) { return Count(e, v1::GenerateEvent::kQueued) > 0; };
  auto a1 = Submit(TestRequest("a1", 2), "A");
  ASSERT_TRUE(a1->WaitFor(is_queued));
  auto a2 = Submit(TestRequest("a2", 2), "A");
  ASSERT_TRUE(a2->WaitFor(is_queued));
  auto a3 = Submit(TestRequest("a3", 2), "A");
  ASSERT_TRUE(a3->WaitFor(is_queued));
  auto b1 = Submit(TestRequest("b1", 2), "B");
  ASSERT_TRUE(b1->WaitFor(is_queued));

  const v1::ListJobsResponse listing = ListJobs();
  ASSERT_EQ(listing.jobs_size(), 5);
  EXPECT_EQ(listing.jobs(0).prompt(), "blocker");
  EXPECT_EQ(listing.jobs(0).state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(listing.jobs(0).position(), -1);
  std::vector<std::string> queued;
  for (int i = 1; i < listing.jobs_size(); ++i) {
    queued.push_back(listing.jobs(i).prompt());
    EXPECT_EQ(listing.jobs(i).position(), i - 1);
    EXPECT_EQ(listing.jobs(i).state(), v1::JOB_STATE_QUEUED);
  }
  EXPECT_THAT(queued, ElementsAre("a1", "b1", "a2", "a3"));  // B's one job does not wait behind all of A's
  EXPECT_EQ(listing.jobs(2).client_id(), "B");
  // b1's stream was told its position.
  const auto b1_events = b1->events();
  const auto last_queued = std::find_if(b1_events.rbegin(), b1_events.rend(), [](const auto& e) { return e.has_queued(); });
  EXPECT_EQ(last_queued->queued().position(), 1);
  EXPECT_EQ(last_queued->queued().queue_length(), 4);

  ASSERT_TRUE(Cancel(blocker->job_id()).ok());
  for (auto* s : {a1.get(), a2.get(), a3.get(), b1.get()}) EXPECT_TRUE(s->Wait().ok());
  EXPECT_THAT(runner_->run_order(), ElementsAre("blocker", "a1", "b1", "a2", "a3"));
}

TEST_F(ServerTest, FullQueueAnswersResourceExhaustedAtOnce) {
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  runner_.reset();
  plugins_.reset();
  StartServer(/*max_queue=*/2);
  auto blocker = Submit(TestRequest("blocker", 1000, 5));
  ASSERT_TRUE(blocker->WaitFor(HasProgress));
  auto q1 = Submit(TestRequest("q1", 1));
  auto q2 = Submit(TestRequest("q2", 1));
  ASSERT_TRUE(q1->WaitFor([](const auto& e) { return !e.empty(); }));
  ASSERT_TRUE(q2->WaitFor([](const auto& e) { return !e.empty(); }));
  const auto t0 = Clock::now();
  auto rejected = Submit(TestRequest("q3", 1));
  const grpc::Status status = rejected->Wait(5s);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("queue is full (2 of 2"));
  EXPECT_LT(Clock::now() - t0, 1s);
  ASSERT_TRUE(Cancel(blocker->job_id()).ok());
  EXPECT_TRUE(q1->Wait().ok());
  EXPECT_TRUE(q2->Wait().ok());
}

TEST_F(ServerTest, CancelStopsARunningJobWithinOneStep) {
  constexpr int kStepMs = 50;
  auto stream = Submit(TestRequest("long", 1000, kStepMs));
  ASSERT_TRUE(stream->WaitFor(HasProgress));
  const auto t0 = Clock::now();
  ASSERT_TRUE(Cancel(stream->job_id()).ok());
  const grpc::Status status = stream->Wait();
  const auto elapsed = Clock::now() - t0;
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_THAT(status.error_message(), HasSubstr("cancelled by a Cancel request"));
  EXPECT_LT(elapsed, std::chrono::milliseconds(2 * kStepMs + 400));
  EXPECT_LE(runner_->steps_after_cancel(), 1);
  const auto events = stream->events();
  ASSERT_TRUE(events.back().has_finished());
  EXPECT_EQ(events.back().finished().state(), v1::JOB_STATE_CANCELLED);
  // Cancel acts on that job only: the daemon goes on with the next one.
  EXPECT_TRUE(Submit(TestRequest("next", 2))->Wait().ok());
  EXPECT_EQ(Cancel(stream->job_id()).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, CancelRemovesAQueuedJob) {
  auto blocker = Submit(TestRequest("blocker", 1000, 5));
  ASSERT_TRUE(blocker->WaitFor(HasProgress));
  auto queued = Submit(TestRequest("queued", 2), "B");
  ASSERT_TRUE(queued->WaitFor([](const auto& e) { return !e.empty(); }));
  ASSERT_TRUE(Cancel(queued->job_id()).ok());
  EXPECT_EQ(queued->Wait(2s).error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(ListJobs().jobs_size(), 1);
  ASSERT_TRUE(Cancel(blocker->job_id()).ok());
  EXPECT_EQ(blocker->Wait().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_THAT(runner_->run_order(), ElementsAre("blocker"));
}

TEST_F(ServerTest, DisconnectingClientStopsItsJob) {
  constexpr int kStepMs = 20;
  auto stream = Submit(TestRequest("abandoned", 1000, kStepMs));
  ASSERT_TRUE(stream->WaitFor(HasProgress));
  const auto t0 = Clock::now();
  stream->context.TryCancel();  // the client goes away
  ASSERT_TRUE(WaitIdle(5s));
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(2 * kStepMs + 500));
  EXPECT_LT(runner_->steps_done(), 500);
  EXPECT_TRUE(Submit(TestRequest("next", 2))->Wait().ok());
}

TEST_F(ServerTest, SlowReaderLosesPreviewsButNeverResultsAndMemoryStaysBounded) {
  constexpr int kSteps = 200;
  constexpr int kPreviewBytes = 1 << 20;
  v1::GenerateRequest request = TestRequest("slow", kSteps, 1);
  SetSetting(request, "test_preview_every", 1);
  SetSetting(request, "test_preview_bytes", kPreviewBytes);
  SetSetting(request, "test_results", 5);
  SetSetting(request, "test_result_bytes", 100000);
  const long long rss_before = testing::CurrentRssBytes();
  auto stream = std::make_unique<Stream>();
  stream->context.AddMetadata("atelier-client", "slow");
  stream->Pause(true);  // a stuck client: reads nothing while the job runs
  stream->Start(generation_->Generate(&stream->context, request));
  // The job runs to the end although the client reads nothing: the executor never waits for a stream.
  const auto deadline = Clock::now() + 10s;
  while (runner_->run_order().empty() && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  ASSERT_FALSE(runner_->run_order().empty()) << "the job never started";
  ASSERT_TRUE(WaitIdle(20s));
  EXPECT_EQ(runner_->steps_done(), kSteps);
  const long long growth = testing::CurrentRssBytes() - rss_before;
  // 200 previews of 1 MiB would be 200 MiB if queued; latest-wins keeps a few.
  EXPECT_LT(growth, 64ll << 20) << "RSS grew by " << growth / (1 << 20) << " MiB";
  stream->Pause(false);
  ASSERT_TRUE(stream->Wait().ok());
  const auto events = stream->events();
  EXPECT_EQ(Count(events, v1::GenerateEvent::kResult), 5);
  const int previews = static_cast<int>(std::count_if(
      events.begin(), events.end(), [](const auto& e) { return e.has_progress() && e.progress().has_preview(); }));
  EXPECT_LT(previews, kSteps / 2);
  ASSERT_TRUE(events.back().has_finished());
  EXPECT_GT(events.back().finished().dropped_events(), 0u);
  for (const auto& e : events) {
    if (e.has_result()) {
      EXPECT_EQ(e.result().image().data().size(), 100000u);
    }
  }
}

TEST_F(ServerTest, WatchJoinsMidJobAndWatchersDoNotOwnTheJob) {
  v1::GenerateRequest request = TestRequest("watched", 60, 10);
  SetSetting(request, "test_results", 2);
  auto owner = Submit(request);
  ASSERT_TRUE(owner->WaitFor([](const auto& e) {
    return std::any_of(e.begin(), e.end(), [](const auto& x) { return x.has_progress() && x.progress().sampling_step() >= 10; });
  }));
  auto watcher = WatchJob(owner->job_id());
  auto live_only = WatchJob(owner->job_id(), /*skip_history=*/true);
  {
    auto quitter = WatchJob(owner->job_id());
    ASSERT_TRUE(quitter->WaitFor([](const auto& e) { return !e.empty(); }));
    quitter->context.TryCancel();  // a watcher leaving does not cancel the job
    EXPECT_EQ(quitter->Wait().error_code(), grpc::StatusCode::CANCELLED);
  }
  ASSERT_TRUE(owner->Wait().ok());
  ASSERT_TRUE(watcher->Wait().ok());
  ASSERT_TRUE(live_only->Wait().ok());
  const auto seen = watcher->events();
  EXPECT_EQ(Count(seen, v1::GenerateEvent::kStarted), 1);  // replayed
  EXPECT_EQ(Count(seen, v1::GenerateEvent::kResult), 2);
  EXPECT_GE(Count(seen, v1::GenerateEvent::kProgress), 1);
  ASSERT_TRUE(seen.back().has_finished());
  EXPECT_EQ(seen.back().finished().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(seen.back().job_id(), owner->job_id());
  const auto live = live_only->events();
  EXPECT_EQ(Count(live, v1::GenerateEvent::kStarted), 0);
  EXPECT_EQ(Count(live, v1::GenerateEvent::kResult), 2);

  auto missing = WatchJob("no-such-job");
  EXPECT_EQ(missing->Wait().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, SkipEndsTheCurrentImageEarly) {
  auto stream = Submit(TestRequest("skipped", 1000, 5));
  ASSERT_TRUE(stream->WaitFor(HasProgress));
  grpc::ClientContext context;
  v1::SkipRequest request;
  request.set_job_id(stream->job_id());
  v1::SkipResponse response;
  ASSERT_TRUE(generation_->Skip(&context, request, &response).ok());
  EXPECT_EQ(response.state(), v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(stream->Wait(5s).ok());
  const auto events = stream->events();
  const auto result = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_result(); });
  ASSERT_NE(result, events.end());
  EXPECT_TRUE(result->result().interrupted());
  EXPECT_LT(runner_->steps_done(), 1000);
}

// --max-job-seconds: a runaway job is stopped at the limit with DEADLINE_EXCEEDED naming it, and the next job runs.
TEST_F(ServerTest, AJobPastTheWallTimeLimitIsStopped) {
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  StartServer(8, 0.3);
  const auto start = Clock::now();
  auto runaway = Submit(TestRequest("runaway", 1000, 50));  // 50 s without the limit
  const grpc::Status status = runaway->Wait(10s);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("--max-job-seconds"));
  EXPECT_LT(seconds, 3.0);
  ASSERT_TRUE(runaway->events().back().has_finished());
  EXPECT_EQ(runaway->events().back().finished().state(), v1::JOB_STATE_FAILED);
  EXPECT_TRUE(Submit(TestRequest("next", 2))->Wait().ok());
}

TEST_F(ServerTest, GracefulShutdownEndsEveryStreamWithAClearStatus) {
  auto running = Submit(TestRequest("running", 1000, 20), "A");
  ASSERT_TRUE(running->WaitFor(HasProgress));
  auto queued = Submit(TestRequest("queued", 2), "B");
  ASSERT_TRUE(queued->WaitFor([](const auto& e) { return !e.empty(); }));
  auto watcher = WatchJob(running->job_id());
  ASSERT_TRUE(watcher->WaitFor([](const auto& e) { return !e.empty(); }));

  server_->Drain();
  grpc::Status status;
  EXPECT_EQ(Health("", &status), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Health("atelier.v1.Generation", &status), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  auto late = Submit(TestRequest("late", 1));
  EXPECT_EQ(late->Wait().error_code(), grpc::StatusCode::UNAVAILABLE);

  const grpc::Status running_status = running->Wait();
  EXPECT_EQ(running_status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_THAT(running_status.error_message(), HasSubstr("the daemon is shutting down"));
  EXPECT_EQ(watcher->Wait().error_code(), grpc::StatusCode::CANCELLED);
  const grpc::Status queued_status = queued->Wait();
  EXPECT_EQ(queued_status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(queued_status.error_message(), HasSubstr("the job was not started"));
  // The stream says UNAVAILABLE (retry elsewhere); the job's state is CANCELLED, as common.proto promises.
  ASSERT_TRUE(queued->events().back().has_finished());
  EXPECT_EQ(queued->events().back().finished().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(runner_->run_order(), ElementsAre("running"));
  server_->Stop(absl::Seconds(1));
}

}  // namespace
}  // namespace atelier
