// The real gRPC server running the real generation runner on the tiny checkpoint (fixtures' tiny-sd as a user
// installs it): the fixture's image through Generate, previews, batches equal single runs, cancel mid-run, two
// clients and a watcher, a reader that never reads, the template plugin's post-processing, JPEG/WebP results with
// their infotext, img2img resizing, per-job checkpoint switching, and bad requests with their status codes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <unistd.h>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "atelier/v1/generation.grpc.pb.h"
#include "atelier/v1/models.grpc.pb.h"
#include "atelier/v1/plugins.grpc.pb.h"
#include "engine/text/clip_tokenizer.h"
#include "image/image_formats.h"
#include "engine/io/model_folders.h"
#include "engine/models/model_manager.h"
#include "engine/io/safetensors_writer.h"
#include "engine/pipeline/generate.h"
#include "engine/pipeline/generation_infotext.h"
#include "event_stream.h"
#include "fixture_case.h"
#include "server/daemon_server.h"
#include "server/generation_runner.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::atelier::v1;
using ::testing::HasSubstr;
using testing::Count;
using testing::Stream;
using namespace std::chrono_literals;

void SetOption(v1::GenerateRequest& r, const std::string& key, const std::string& value) {
  (*r.mutable_override_settings()->mutable_fields())[key].set_string_value(value);
}
void SetOption(v1::GenerateRequest& r, const std::string& key, double value) {
  (*r.mutable_override_settings()->mutable_fields())[key].set_number_value(value);
}

// A small, fast job: 64x64, Euler, CPU noise.
v1::GenerateRequest SmallRequest(int64_t seed, int steps = 3) {
  v1::GenerateRequest r;
  r.set_prompt("a red circle");
  r.set_seed(seed);
  r.set_steps(steps);
  r.set_width(64);
  r.set_height(64);
  r.set_sampler_name("Euler");
  SetOption(r, "randn_source", "CPU");
  return r;
}

std::vector<v1::Result> Results(const Stream::Events& events) {
  std::vector<v1::Result> out;
  for (const auto& e : events) {
    if (e.has_result()) out.push_back(e.result());
  }
  return out;
}

at::Tensor Pixels(const std::string& bytes) {
  auto image = engine::DecodeImageRgb(bytes);
  EXPECT_TRUE(image.ok()) << image.status();
  if (!image.ok()) return at::Tensor();
  return at::from_blob(image->pixels.data(), {image->height, image->width, 3}, at::kByte).clone();
}

// A small JPEG whose header claims 60000x60000 pixels (JPEG has no checksum): decoders must refuse it before
// allocating 10 GB.
std::string HugeJpeg() {
  engine::PixelImage image;
  image.width = image.height = 16;
  image.pixels.assign(16 * 16 * 3, 100);
  engine::ImageEncodeOptions options;
  options.format = engine::ImageFileFormat::kJpeg;
  std::string jpeg = *engine::EncodeImage(image, options);
  const size_t sof = jpeg.find("\xFF\xC0");
  if (sof == std::string::npos) return jpeg;
  for (size_t at : {sof + 5, sof + 7}) {  // height, width (big-endian)
    jpeg[at] = static_cast<char>(60000 >> 8);
    jpeg[at + 1] = static_cast<char>(60000 & 0xFF);
  }
  return jpeg;
}

class GenerationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cases = testing::CasesOf("txt2img-tiny");
    ASSERT_FALSE(cases.empty());
    case_ = cases.front();
    testing::InstallTinyCheckpoint(testing::WeightsFile(case_), root_.path() / "models");
    fs::create_directories(root_.path() / "models/VAE");
    auto folders = engine::ModelFolders::Open(root_.path());
    ASSERT_TRUE(folders.ok()) << folders.status();
    folders_ = std::make_unique<engine::ModelFolders>(*std::move(folders));
    models_ = std::make_unique<engine::ModelManager>(folders_.get(), "", engine::LoadOptions());
    ASSERT_TRUE(models_->Load("tiny", "Automatic").ok());
    auto tokenizer = engine::ClipTokenizer::Load(fs::path(ATELIER_SOURCE_DIR) / "assets" / "clip");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);

    testing::CopyPlugin(testing::BuiltPlugin("invert"), plugins_dir_.path(), "invert.so");
    testing::CopyPlugin(testing::TestPlugin("hook_probe"), plugins_dir_.path(), "hook_probe.so");
    testing::CopyPlugin(testing::TestPlugin("probe_v11"), plugins_dir_.path(), "probe_v11.so");
    testing::CopyPlugin(testing::TestPlugin("abi_v10"), plugins_dir_.path(), "abi_v10.so");
    testing::CopyPlugin(testing::BuiltPlugin("grayscale"), plugins_dir_.path(), "grayscale.so");
    testing::CopyPlugin(testing::BuiltPlugin("export"), plugins_dir_.path(), "export.so");
    host::PluginLoaderOptions options;
    options.environment.host_version = "test";
    options.environment.device = "cpu";
    plugins_ = host::PluginRegistry::LoadDirectory(plugins_dir_.path(), std::move(options));
    models_->set_observer(plugins_.get());  // as atelierd does: model changes reach the plugins
    runner_ = std::make_unique<server::GenerationRunner>(*models_, *plugins_, *tokenizer_);
    StartServer(0);
  }
  // (Re)starts the server on 127.0.0.1:0 with the fixture's runner; `max_job_seconds` 0: no limit.
  void StartServer(double max_job_seconds) {
    if (server_) server_->Shutdown(absl::Seconds(1));
    server::DaemonServerOptions server_options;
    server_options.listen = "127.0.0.1:0";
    server_options.max_job_seconds = max_job_seconds;
    server::DaemonFacts facts;
    facts.version = "test";
    facts.runtime.device = "cpu";
    facts.started_at = absl::Now();
    auto started = server::DaemonServer::Start(server_options, *runner_, *plugins_, *models_, facts);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = *std::move(started);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args);
    generation_ = v1::Generation::NewStub(channel_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
  }

  grpc::Status CancelJob(const std::string& job_id) {
    grpc::ClientContext context;
    v1::CancelRequest cancel;
    cancel.set_job_id(job_id);
    v1::CancelResponse response;
    return generation_->Cancel(&context, cancel, &response);
  }

  std::unique_ptr<Stream> Submit(const v1::GenerateRequest& request, const std::string& client = "client-a") {
    auto stream = std::make_unique<Stream>();
    stream->context.AddMetadata("atelier-client", client);
    stream->Start(generation_->Generate(&stream->context, request));
    return stream;
  }

  // Runs a job to its end; its events and final status.
  Stream::Events Run(const v1::GenerateRequest& request, grpc::Status* status) {
    auto stream = Submit(request);
    *status = stream->Wait(60s);
    return stream->events();
  }

  testing::FixtureCase case_;
  testing::TempDir root_, plugins_dir_;
  std::unique_ptr<engine::ModelFolders> folders_;
  std::unique_ptr<engine::ModelManager> models_;
  std::unique_ptr<engine::ClipTokenizer> tokenizer_;
  std::unique_ptr<host::PluginRegistry> plugins_;
  std::unique_ptr<server::GenerationRunner> runner_;
  std::unique_ptr<server::DaemonServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> generation_;
};

TEST_F(GenerationTest, FixtureImageThroughGenerateWithProgressAndPreviews) {
  const auto& v = case_.json["values"];
  v1::GenerateRequest r;
  r.set_prompt(v["prompt"].get<std::string>());
  r.set_negative_prompt(v["negative_prompt"].get<std::string>());
  r.set_seed(v["seed"].get<int64_t>());
  r.set_steps(v["steps"].get<int>());
  r.set_width(v["width"].get<int>());
  r.set_height(v["height"].get<int>());
  r.set_sampler_name(v["sampler"].get<std::string>());
  r.set_scheduler(v["schedule_type"].get<std::string>());
  r.set_cfg_scale(v["cfg_scale"].get<double>());
  if (v.contains("eta") && v["eta"].is_number()) r.set_eta(v["eta"].get<double>());  // null: WebUI's default
  SetOption(r, "CLIP_stop_at_last_layers", v["clip_skip"].get<double>());
  SetOption(r, "randn_source", v["randn_source"].get<std::string>());
  constexpr int kPreviewSize = 64;
  r.mutable_preview()->set_method(v1::PREVIEW_METHOD_FULL);
  r.mutable_preview()->set_format(v1::IMAGE_FORMAT_PNG);
  r.mutable_preview()->set_max_size(kPreviewSize);
  // The preview's size: the image's, shrunk (aspect kept, rounded) so that its longer side is at most 64 px.
  const int width = v["width"].get<int>(), height = v["height"].get<int>();
  const double shrink = std::min(1.0, static_cast<double>(kPreviewSize) / std::max(width, height));
  const int64_t preview_height = std::max<int64_t>(1, std::lround(height * shrink));
  const int64_t preview_width = std::max<int64_t>(1, std::lround(width * shrink));
  grpc::Status status;
  const auto events = Run(r, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();

  ASSERT_EQ(Count(events, v1::GenerateEvent::kStarted), 1);
  const auto started = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_started(); });
  EXPECT_EQ(started->started().all_seeds(0), v["seed"].get<int64_t>());
  EXPECT_EQ(started->started().image_count(), 1);
  // Lossy progress: the last step always arrives; the previews are the full VAE decode shrunk to 64 px.
  int last_step = 0, previews = 0;
  for (const auto& e : events) {
    if (!e.has_progress()) continue;
    EXPECT_EQ(e.progress().pass(), "txt2img");
    EXPECT_EQ(e.progress().sampling_steps(), v["steps"].get<int>());
    last_step = e.progress().sampling_step();
    if (e.progress().has_preview()) {
      ++previews;
      EXPECT_EQ(e.progress().preview().mime_type(), "image/png");
      const at::Tensor preview = Pixels(e.progress().preview().data());
      EXPECT_EQ(preview.size(0), preview_height);
      EXPECT_EQ(preview.size(1), preview_width);
    }
  }
  EXPECT_EQ(last_step, v["steps"].get<int>());
  EXPECT_GE(previews, 1);

  const auto results = Results(events);
  ASSERT_EQ(results.size(), 1u);
  const v1::Result& result = results[0];
  EXPECT_EQ(result.image().mime_type(), "image/png");
  const at::Tensor got = Pixels(result.image().data());
  const at::Tensor want = case_.io.at("image_uint8");
  ASSERT_EQ(got.sizes(), want.sizes());
  const int max_diff = (got.to(at::kInt) - want.to(at::kInt)).abs().max().item<int>();
  EXPECT_LE(max_diff, 1);
  EXPECT_THAT(result.infotext(),
              HasSubstr(absl::StrCat("Steps: ", v["steps"].get<int>(), ", Sampler: ", v["sampler"].get<std::string>(),
                                     ", Schedule type: ", v["schedule_type"].get<std::string>(), ", CFG scale: ",
                                     v["cfg_scale"].dump(), ", Seed: ", v["seed"].get<int64_t>(), ", Size: ", width,
                                     "x", height, ", Model hash: ")));
  // WebUI writes Clip skip above 1 and the RNG unless it is its default GPU.
  std::string model_end = "Model: tiny";
  if (v["clip_skip"].get<int>() > 1) model_end += absl::StrCat(", Clip skip: ", v["clip_skip"].get<int>());
  if (v["randn_source"].get<std::string>() != "GPU") model_end += ", RNG: " + v["randn_source"].get<std::string>();
  EXPECT_THAT(result.infotext(), HasSubstr(model_end));
  // The same text is in the PNG.
  auto embedded = engine::ReadInfotext(result.image().data());
  ASSERT_TRUE(embedded.ok());
  EXPECT_EQ(*embedded, result.infotext());

  const v1::Finished& finished = events.back().finished();
  EXPECT_EQ(finished.state(), v1::JOB_STATE_SUCCEEDED);
  std::vector<std::string> stages;
  for (const auto& t : finished.timings()) stages.push_back(t.stage());
  EXPECT_THAT(stages, ::testing::IsSupersetOf({"text", "sampling", "decode", "preview", "save"}));
}

TEST_F(GenerationTest, BatchOfThreeEqualsThreeSingleRuns) {
  v1::GenerateRequest batch = SmallRequest(7);
  batch.set_batch_size(3);
  grpc::Status status;
  const auto results = Results(Run(batch, &status));
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(results.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(results[i].index(), i);
    EXPECT_EQ(results[i].seed(), 7 + i);
    const auto single = Results(Run(SmallRequest(7 + i), &status));
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(single.size(), 1u);
    // Batched convolutions sum in another order: latents agree to float precision, so pixels within 1 level.
    const at::Tensor diff = (Pixels(results[i].image().data()).to(at::kInt) - Pixels(single[0].image().data())).abs();
    EXPECT_LE(diff.max().item<int>(), 1) << "image " << i;
    EXPECT_LT(diff.gt(0).sum().item<int64_t>(), diff.numel() / 100) << "image " << i;
    EXPECT_THAT(single[0].infotext(), HasSubstr(absl::StrCat("Seed: ", 7 + i, ",")));
  }
}

TEST_F(GenerationTest, CancelMidRunStopsPromptlyAndTheNextJobRuns) {
  v1::GenerateRequest slow = SmallRequest(1, 1000);
  slow.set_width(128);
  slow.set_height(128);
  auto stream = Submit(slow);
  ASSERT_TRUE(stream->WaitFor([](const auto& e) { return Count(e, v1::GenerateEvent::kProgress) > 0; }, 30s));
  const auto asked = std::chrono::steady_clock::now();
  ASSERT_TRUE(CancelJob(stream->job_id()).ok());
  const grpc::Status status = stream->Wait(30s);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
  EXPECT_LT(seconds, 5.0);
  // As WebUI's interrupt: the last prediction comes back, marked.
  const auto results = Results(stream->events());
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].interrupted());
  EXPECT_EQ(stream->events().back().finished().state(), v1::JOB_STATE_CANCELLED);

  grpc::Status next;
  EXPECT_EQ(Results(Run(SmallRequest(2), &next)).size(), 1u);
  EXPECT_TRUE(next.ok()) << next.error_message();
}

// WebUI's Skip, per job: the current batch ends with its last prediction, the next batch runs in full.
TEST_F(GenerationTest, SkipEndsTheCurrentBatchOnly) {
  v1::GenerateRequest r = SmallRequest(30, 400);
  r.set_n_iter(2);
  auto stream = Submit(r);
  ASSERT_TRUE(stream->WaitFor([](const auto& e) { return Count(e, v1::GenerateEvent::kProgress) > 0; }, 30s));
  grpc::ClientContext context;
  v1::SkipRequest skip;
  skip.set_job_id(stream->job_id());
  v1::SkipResponse response;
  ASSERT_TRUE(generation_->Skip(&context, skip, &response).ok());
  // The second batch would take long at 400 steps: cancel it once it runs.
  ASSERT_TRUE(stream->WaitFor([](const auto& e) { return Count(e, v1::GenerateEvent::kResult) == 1; }, 30s));
  const auto first = Results(stream->events());
  EXPECT_TRUE(first[0].interrupted());
  EXPECT_EQ(first[0].seed(), 30);
  ASSERT_TRUE(stream->WaitFor([](const auto& e) {
    return std::any_of(e.begin(), e.end(), [](const auto& x) { return x.has_progress() && x.progress().job_no() == 1; });
  }, 30s));
  ASSERT_TRUE(CancelJob(stream->job_id()).ok());
  EXPECT_EQ(stream->Wait(30s).error_code(), grpc::StatusCode::CANCELLED);
  const auto results = Results(stream->events());
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[1].seed(), 31);  // the second batch ran (and was then cancelled)
}

TEST_F(GenerationTest, TwoClientsBothCompleteWhileAThirdWatches) {
  v1::GenerateRequest a = SmallRequest(11, 8), b = SmallRequest(22, 8);
  auto first = Submit(a, "client-a");
  ASSERT_TRUE(first->WaitFor([](const auto& e) { return !e.empty(); }));
  auto second = Submit(b, "client-b");
  auto watcher = std::make_unique<Stream>();
  v1::WatchRequest watch;
  watch.set_job_id(first->job_id());
  watcher->Start(generation_->Watch(&watcher->context, watch));
  ASSERT_TRUE(first->Wait(60s).ok());
  ASSERT_TRUE(second->Wait(60s).ok());
  ASSERT_TRUE(watcher->Wait(60s).ok());
  const auto ra = Results(first->events()), rb = Results(second->events()), rw = Results(watcher->events());
  ASSERT_EQ(ra.size(), 1u);
  ASSERT_EQ(rb.size(), 1u);
  ASSERT_EQ(rw.size(), 1u);
  EXPECT_EQ(ra[0].seed(), 11);
  EXPECT_EQ(rb[0].seed(), 22);
  EXPECT_EQ(rw[0].image().data(), ra[0].image().data());
  // Each equals the same request run alone.
  grpc::Status status;
  const auto alone_a = Results(Run(a, &status)), alone_b = Results(Run(b, &status));
  ASSERT_EQ(alone_a.size(), 1u);
  ASSERT_EQ(alone_b.size(), 1u);
  EXPECT_TRUE(at::equal(Pixels(alone_a[0].image().data()), Pixels(ra[0].image().data())));
  EXPECT_TRUE(at::equal(Pixels(alone_b[0].image().data()), Pixels(rb[0].image().data())));
}

TEST_F(GenerationTest, AClientThatNeverReadsDoesNotHoldOthersUp) {
  // Large enough to overflow the transport's flow-control window: full-VAE PNG previews every step, 2 results.
  v1::GenerateRequest stalled = SmallRequest(5, 10);
  stalled.set_width(128);
  stalled.set_height(128);
  stalled.set_batch_size(2);
  stalled.mutable_preview()->set_method(v1::PREVIEW_METHOD_FULL);
  stalled.mutable_preview()->set_format(v1::IMAGE_FORMAT_PNG);
  auto sleeper = std::make_unique<Stream>();
  sleeper->Pause(true);
  sleeper->Start(generation_->Generate(&sleeper->context, stalled));
  grpc::Status status;
  const auto other = Results(Run(SmallRequest(6), &status));
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(other.size(), 1u);
  sleeper->Pause(false);
  EXPECT_TRUE(sleeper->Wait(60s).ok());
  EXPECT_EQ(Results(sleeper->events()).size(), 2u);  // results are never dropped
}

TEST_F(GenerationTest, TemplatePluginPostprocessesTheResults) {
  grpc::Status status;
  const auto plain = Results(Run(SmallRequest(3), &status));
  ASSERT_TRUE(status.ok());
  v1::GenerateRequest inverted = SmallRequest(3);
  google::protobuf::Value args;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(R"({"args": [true, 1.0]})", &args).ok());
  (*inverted.mutable_alwayson_scripts()->mutable_fields())["invert"] = args;
  const auto events = Run(inverted, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto results = Results(events);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(at::equal(Pixels(results[0].image().data()), 255 - Pixels(plain[0].image().data())));
  std::vector<std::string> stages;
  for (const auto& t : events.back().finished().timings()) stages.push_back(t.stage());
  EXPECT_THAT(stages, ::testing::Contains("postprocess"));
}

// hook_probe implements every hook with a visible effect: its residuals (shaped like x, wrong for a real UNet)
// reach the UNet, which names them; without them the sampler, block and post-processing hooks all run inside a
// real job (it doubles the frames and exports an artifact naming the first infotext).
TEST_F(GenerationTest, EveryPluginHookRunsInAJob) {
  grpc::Status status;
  const auto plain = Results(Run(SmallRequest(3), &status));
  ASSERT_TRUE(status.ok());
  v1::GenerateRequest probed = SmallRequest(3);
  auto& args = (*probed.mutable_alwayson_scripts()->mutable_fields())["hook_probe"];
  args.mutable_struct_value();
  Run(probed, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("UNet residual"));

  (*args.mutable_struct_value()->mutable_fields())["no_residuals"].set_bool_value(true);
  const auto events = Run(probed, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto results = Results(events);
  ASSERT_EQ(results.size(), 2u);  // postprocess_frames doubled the one image
  EXPECT_EQ(results[1].index(), 1);
  EXPECT_FALSE(at::equal(Pixels(results[0].image().data()), Pixels(plain[0].image().data())));
  const auto artifact = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_artifact(); });
  ASSERT_NE(artifact, events.end());
  EXPECT_EQ(artifact->artifact().name(), "probe.txt");
  EXPECT_EQ(artifact->artifact().data(), "frames=2 first=" + results[0].infotext());
  EXPECT_EQ(Count(events, v1::GenerateEvent::kFrame), 1);
}

// A plugin's error fails its job with the plugin's message and FAILED; the daemon and the same plugin go on: the
// next job's frames go through postprocess (n -> 2n) and export emits its file and frame.
TEST_F(GenerationTest, PluginErrorFailsTheJobAndTheDaemonGoesOn) {
  v1::GenerateRequest failing = SmallRequest(3);
  google::protobuf::Value args;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(R"({"args": ["no_residuals", "fail_postprocess"]})", &args)
                  .ok());
  (*failing.mutable_alwayson_scripts()->mutable_fields())["hook_probe"] = args;
  grpc::Status status;
  auto events = Run(failing, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(status.error_message(), HasSubstr("plugin 'hook_probe' failed in postprocess_frames"));
  ASSERT_TRUE(events.back().has_finished());
  EXPECT_EQ(events.back().finished().state(), v1::JOB_STATE_FAILED);

  v1::GenerateRequest working = SmallRequest(3);
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(R"({"args": ["no_residuals"]})", &args).ok());
  (*working.mutable_alwayson_scripts()->mutable_fields())["hook_probe"] = args;
  events = Run(working, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto results = Results(events);
  ASSERT_EQ(results.size(), 2u);
  ASSERT_EQ(Count(events, v1::GenerateEvent::kArtifact), 1);
  const auto artifact = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_artifact(); });
  EXPECT_EQ(artifact->artifact().data(), "frames=2 first=" + results[0].infotext());
  EXPECT_EQ(artifact->artifact().plugin(), "hook_probe");
  ASSERT_EQ(Count(events, v1::GenerateEvent::kFrame), 1);
  const auto frame = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_frame(); });
  EXPECT_EQ(frame->frame().image().mime_type(), "image/png");
  EXPECT_EQ(frame->frame().image().width(), 64);
}

// ABI 1.1 in real jobs. probe_v11's "windows" runs every UNet call as two windows of rows through model_call_next:
// the image is the unwrapped one's (rows are independent). "shape" makes the batch one video of two frames;
// "passes" records every pass the hooks saw; "schedule" samples on another noise schedule.
TEST_F(GenerationTest, Abi11PluginsWrapTheModelShapeTheJobAndSeeThePasses) {
  grpc::Status status;
  const auto plain = Results(Run(SmallRequest(3), &status));
  ASSERT_TRUE(status.ok());
  auto with = [](const char* args) {
    v1::GenerateRequest r = SmallRequest(3);
    (*r.mutable_alwayson_scripts()->mutable_fields())["probe_v11"].set_string_value(args);
    return r;
  };
  const auto windowed = Results(Run(with("windows"), &status));
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(windowed.size(), 1u);
  const at::Tensor a = Pixels(plain[0].image().data()).to(at::kInt), b = Pixels(windowed[0].image().data()).to(at::kInt);
  EXPECT_LE((a - b).abs().max().item<int>(), 1);
  EXPECT_THAT(windowed[0].infotext(), HasSubstr("Probe11: on"));

  const auto shaped_events = Run(with("shape passes"), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto shaped = Results(shaped_events);
  ASSERT_EQ(shaped.size(), 2u);
  EXPECT_EQ(shaped[1].seed(), shaped[0].seed() + 1);
  const auto started = std::find_if(shaped_events.begin(), shaped_events.end(), [](const auto& e) { return e.has_started(); });
  ASSERT_NE(started, shaped_events.end());
  EXPECT_EQ(started->started().image_count(), 2);
  const auto passes = std::find_if(shaped_events.begin(), shaped_events.end(),
                                   [](const auto& e) { return e.has_artifact() && e.artifact().name() == "passes.txt"; });
  ASSERT_NE(passes, shaped_events.end());
  EXPECT_EQ(passes->artifact().data(), "txt2img:64x64:3");

  v1::GenerateRequest hires = with("passes");
  hires.set_enable_hr(true);
  hires.set_hr_scale(2.0);
  hires.set_hr_upscaler("Latent");
  hires.set_hr_second_pass_steps(2);
  hires.set_denoising_strength(0.5);
  const auto hires_events = Run(hires, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto hires_passes = std::find_if(hires_events.begin(), hires_events.end(), [](const auto& e) {
    return e.has_artifact() && e.artifact().name() == "passes.txt";
  });
  ASSERT_NE(hires_passes, hires_events.end());
  EXPECT_EQ(hires_passes->artifact().data(), "txt2img:64x64:3 hires:128x128:2");

  const auto rescheduled = Results(Run(with("schedule"), &status));
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(at::equal(Pixels(rescheduled[0].image().data()), Pixels(plain[0].image().data())));
}

// Streamed frames: each image leaves as soon as it is decoded, through the plugins' frame hooks in hook order.
// probe_v11 pushes an in-between frame before every frame but the first and a black frame at the end; each frame
// keeps its own seed and infotext; an error in frames_finish is a warning of a job that still succeeds.
TEST_F(GenerationTest, Abi11FramesAreStreamedThroughThePlugins) {
  v1::GenerateRequest r = SmallRequest(3);
  r.set_batch_size(2);
  (*r.mutable_alwayson_scripts()->mutable_fields())["probe_v11"].set_string_value("frames");
  grpc::Status status;
  const auto events = Run(r, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto results = Results(events);
  ASSERT_EQ(results.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(results[i].index(), i);
  EXPECT_EQ(results[1].infotext(), "in-between");
  EXPECT_EQ(results[2].seed(), results[0].seed() + 1);
  EXPECT_THAT(results[2].infotext(), HasSubstr("Seed: " + std::to_string(results[2].seed())));
  const at::Tensor first = Pixels(results[0].image().data()).to(at::kFloat);
  const at::Tensor second = Pixels(results[2].image().data()).to(at::kFloat);
  const at::Tensor between = Pixels(results[1].image().data()).to(at::kFloat);
  EXPECT_LE((between - (first + second) / 2).abs().max().item<float>(), 1.0f);
  EXPECT_EQ(Pixels(results[3].image().data()).max().item<int>(), 0);
  EXPECT_EQ(results[3].seed(), 7);
  const auto seen = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_artifact(); });
  ASSERT_NE(seen, events.end());
  EXPECT_EQ(seen->artifact().data(), "seen=2");
  std::vector<std::string> stages;
  for (const auto& t : events.back().finished().timings()) stages.push_back(t.stage());
  EXPECT_THAT(stages, ::testing::Contains("postprocess"));

  (*r.mutable_alwayson_scripts()->mutable_fields())["probe_v11"].set_string_value("fail_finish");
  const auto warned = Run(r, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(Results(warned).size(), 2u);
  ASSERT_EQ(warned.back().finished().warnings_size(), 1);
  EXPECT_THAT(warned.back().finished().warnings(0), HasSubstr("fail_finish requested"));
}

// One plugin enables another for its job (AnimateDiff handing export its formats): probe_v11 (priority -10)
// feeds the template plugin, which then inverts the image. The pure C example plugin greys images.
TEST_F(GenerationTest, Abi11PluginsFeedEachOtherAndTheCExampleRuns) {
  grpc::Status status;
  const auto plain = Results(Run(SmallRequest(3), &status));
  ASSERT_TRUE(status.ok());
  v1::GenerateRequest fed = SmallRequest(3);
  (*fed.mutable_alwayson_scripts()->mutable_fields())["probe_v11"].set_string_value("feed");
  const auto inverted = Results(Run(fed, &status));
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(inverted.size(), 1u);
  EXPECT_TRUE(at::equal(Pixels(inverted[0].image().data()), 255 - Pixels(plain[0].image().data())));
  EXPECT_THAT(inverted[0].infotext(), HasSubstr("Probe11: on, Invert: 1.0"));

  v1::GenerateRequest grey = SmallRequest(3);
  google::protobuf::Value args;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(R"({"args": [1.0]})", &args).ok());
  (*grey.mutable_alwayson_scripts()->mutable_fields())["grayscale"] = args;
  const auto greyed = Results(Run(grey, &status));
  ASSERT_TRUE(status.ok()) << status.error_message();
  const at::Tensor g = Pixels(greyed[0].image().data()).to(at::kInt);
  EXPECT_LE((g.select(2, 0) - g.select(2, 1)).abs().max().item<int>(), 0);
  EXPECT_LE((g.select(2, 1) - g.select(2, 2)).abs().max().item<int>(), 0);
  const at::Tensor p = Pixels(plain[0].image().data()).to(at::kFloat);
  const at::Tensor luma = (p.select(2, 0) * 0.299 + p.select(2, 1) * 0.587 + p.select(2, 2) * 0.114);
  EXPECT_LE((g.select(2, 0).to(at::kFloat) - luma).abs().max().item<float>(), 1.0f);
  EXPECT_THAT(greyed[0].infotext(), HasSubstr("Grayscale: 1.0"));
}

// Another plugin asks export for files the way AnimateDiff will (its "format" list, fps, loop count): the GIF and
// the TXT arrive as artifacts of the job, named by the first seed, the GIF carrying the infotext and the loop.
TEST_F(GenerationTest, APluginFeedsExportItsFormatsAndTheFilesArrive) {
  grpc::Status status;
  v1::GenerateRequest r = SmallRequest(41);
  r.set_batch_size(2);
  (*r.mutable_alwayson_scripts()->mutable_fields())["probe_v11"].set_string_value("feed_export");
  const auto events = Run(r, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto results = Results(events);
  ASSERT_EQ(results.size(), 2u);
  std::map<std::string, std::string> files;
  for (const auto& e : events) {
    if (e.has_artifact() && e.artifact().plugin() == "export") files[e.artifact().name()] += e.artifact().data();
  }
  ASSERT_EQ(files.size(), 2u);
  ASSERT_TRUE(files.count("41.gif") && files.count("41.txt"));
  EXPECT_EQ(files["41.txt"], results[0].infotext());
  const std::string& gif = files["41.gif"];
  EXPECT_EQ(gif.compare(0, 6, "GIF89a"), 0);
  const size_t loop = gif.find("NETSCAPE2.0");
  ASSERT_NE(loop, std::string::npos);
  EXPECT_EQ(static_cast<uint8_t>(gif[loop + 13]), 1);
  EXPECT_NE(gif.find(results[0].infotext().substr(0, 40)), std::string::npos);  // the comment extension
  size_t frames = 0;
  for (size_t at = gif.find("\x21\xF9\x04"); at != std::string::npos; at = gif.find("\x21\xF9\x04", at + 1)) ++frames;
  EXPECT_EQ(frames, 2u);  // one graphic control block per frame
}

// A plugin built against ABI 1.0 (1.0 descriptor size, abi_minor 0) loads and runs unchanged under the 1.1 host:
// its CFG hook and the 1.0 whole-job hooks (postprocess_frames inverts, export_media writes a file) still run.
TEST_F(GenerationTest, Abi10PluginRunsUnderThe11Host) {
  const host::Plugin* v10 = plugins_->Find("abi_v10");
  ASSERT_NE(v10, nullptr);
  EXPECT_EQ(v10->abi_minor(), 0u);
  EXPECT_EQ(v10->descriptor().priority, 0);  // bytes past its struct_size are not read
  EXPECT_THAT(v10->HookNames(), ::testing::ElementsAre("process", "cfg_after_cfg", "postprocess_frames", "export"));
  grpc::Status status;
  v1::GenerateRequest r = SmallRequest(3);
  (*r.mutable_alwayson_scripts()->mutable_fields())["abi_v10"].set_string_value("on");
  const auto events = Run(r, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto results = Results(events);
  ASSERT_EQ(results.size(), 1u);
  const auto artifact = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_artifact(); });
  ASSERT_NE(artifact, events.end());
  EXPECT_EQ(artifact->artifact().data(), "frames=1");
  // With the template plugin too, the 1.1 frame hook runs first and the 1.0 whole-job hook on its output: the
  // two inversions cancel out, leaving abi_v10's halved prediction alone.
  v1::GenerateRequest both = r;
  google::protobuf::Value args;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(R"({"args": [true, 1.0]})", &args).ok());
  (*both.mutable_alwayson_scripts()->mutable_fields())["invert"] = args;
  const auto twice = Results(Run(both, &status));
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(at::equal(Pixels(twice[0].image().data()), 255 - Pixels(results[0].image().data())));
}

// model_unloaded reaches plugins when the model goes (Models.UnloadModel), after a job built a pipeline.
TEST_F(GenerationTest, ModelUnloadedReachesPlugins) {
  grpc::Status status;
  Run(SmallRequest(3), &status);
  ASSERT_TRUE(status.ok());
  auto models = v1::Models::NewStub(channel_);
  grpc::ClientContext context;
  v1::UnloadModelResponse unloaded;
  ASSERT_TRUE(models->UnloadModel(&context, v1::UnloadModelRequest(), &unloaded).ok());
  auto plugins = v1::Plugins::NewStub(channel_);
  v1::InvokeRequest request;
  request.set_plugin("probe_v11");
  request.set_method("stats");
  auto stream = std::make_unique<Stream>();
  stream->Start(plugins->Invoke(&stream->context, request));
  ASSERT_TRUE(stream->Wait().ok());
  EXPECT_EQ(stream->events().back().finished().invoke_result_json(), R"({"unloaded": 1})");
}

// A cancelled job with a frame plugin still delivers its interrupted image through the plugin, and the plugins'
// frames_finish runs (probe_v11 pushes its black frame and writes frames.txt).
TEST_F(GenerationTest, CancelledJobsFramesStillGoThroughThePlugins) {
  v1::GenerateRequest slow = SmallRequest(1, 1000);
  (*slow.mutable_alwayson_scripts()->mutable_fields())["probe_v11"].set_string_value("frames");
  google::protobuf::Value args;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(R"({"args": [true, 1.0]})", &args).ok());
  (*slow.mutable_alwayson_scripts()->mutable_fields())["invert"] = args;
  auto stream = Submit(slow);
  ASSERT_TRUE(stream->WaitFor([](const auto& e) { return Count(e, v1::GenerateEvent::kProgress) > 0; }, 30s));
  ASSERT_TRUE(CancelJob(stream->job_id()).ok());
  EXPECT_EQ(stream->Wait(30s).error_code(), grpc::StatusCode::CANCELLED);
  const auto events = stream->events();
  const auto results = Results(events);
  ASSERT_EQ(results.size(), 2u);  // the interrupted image, then the black frame frames_finish pushed
  EXPECT_TRUE(results[0].interrupted());
  EXPECT_THAT(results[0].infotext(), HasSubstr("Invert: 1.0"));
  EXPECT_EQ(Pixels(results[1].image().data()).min().item<int>(), 255);  // black, inverted by the later plugin
  const auto seen = std::find_if(events.begin(), events.end(), [](const auto& e) { return e.has_artifact(); });
  ASSERT_NE(seen, events.end());
  EXPECT_EQ(seen->artifact().data(), "seen=1");
}

// Cancel frees the worker in bounded time (issue 17): a 2048x2048 job whose one UNet step takes far longer than the
// bound stops inside the UNet (between layers and attention blocks) once cancelled, and the next job starts at once;
// a job whose client disconnects (nobody left to receive it) stops the same way and skips its decode.
TEST_F(GenerationTest, CancelStopsInsideTheModelAndFreesTheWorker) {
  auto huge = [] {
    v1::GenerateRequest r = SmallRequest(1, 2);
    r.set_width(2048);
    r.set_height(2048);
    return r;
  };
  auto started = [](const auto& e) { return Count(e, v1::GenerateEvent::kStarted) > 0; };
  auto stream = Submit(huge());
  ASSERT_TRUE(stream->WaitFor(started, 60s));
  std::this_thread::sleep_for(2s);  // well inside the first UNet step
  const auto asked = std::chrono::steady_clock::now();
  ASSERT_TRUE(CancelJob(stream->job_id()).ok());
  grpc::Status next;
  const auto small = Results(Run(SmallRequest(2), &next));  // queued behind the cancelled job
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
  EXPECT_TRUE(next.ok()) << next.error_message();
  EXPECT_EQ(small.size(), 1u);
  EXPECT_EQ(stream->Wait(5s).error_code(), grpc::StatusCode::CANCELLED);
  std::printf("cancel of a 2048x2048 step to the next job's end: %.2f s\n", seconds);
  EXPECT_LT(seconds, 15.0);  // generous for slow CI machines; without the in-model checks: minutes

  // The submitter goes away: its job is cancelled, nobody is left to receive it, and the worker is free again.
  auto gone = Submit(huge());
  ASSERT_TRUE(gone->WaitFor(started, 60s));
  std::this_thread::sleep_for(1s);
  const auto left = std::chrono::steady_clock::now();
  gone.reset();  // disconnects
  const auto after = Results(Run(SmallRequest(3), &next));
  const double freed = std::chrono::duration<double>(std::chrono::steady_clock::now() - left).count();
  EXPECT_TRUE(next.ok()) << next.error_message();
  EXPECT_EQ(after.size(), 1u);
  std::printf("disconnect of a 2048x2048 job to the next job's end: %.2f s\n", freed);
  EXPECT_LT(freed, 15.0);
}

// An UnloadModel whose caller gave up while a job ran does not unload when that job ends (the next job still runs).
TEST_F(GenerationTest, AnAbandonedUnloadDoesNotTakeEffectLater) {
  auto slow = Submit(SmallRequest(1, 1000));
  ASSERT_TRUE(slow->WaitFor([](const auto& e) { return Count(e, v1::GenerateEvent::kProgress) > 0; }, 30s));
  auto models = v1::Models::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 300ms);
  v1::UnloadModelResponse unloaded;
  EXPECT_EQ(models->UnloadModel(&context, v1::UnloadModelRequest(), &unloaded).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(CancelJob(slow->job_id()).ok());
  EXPECT_EQ(slow->Wait(30s).error_code(), grpc::StatusCode::CANCELLED);
  grpc::Status status;
  EXPECT_EQ(Results(Run(SmallRequest(2), &status)).size(), 1u);
  EXPECT_TRUE(status.ok()) << status.error_message();  // the model is still loaded
  EXPECT_NE(models_->current(), nullptr);
}

// The cost budget (issue 17): every finished job calibrates the estimate of the next from its shape; Started carries
// it; a job estimated past --max-job-seconds is refused at admission, naming the estimate and the limit.
TEST_F(GenerationTest, JobsEstimatedPastTheLimitAreRefusedAtAdmission) {
  StartServer(20);

  auto estimate_of = [](const Stream::Events& events) {
    for (const auto& e : events) {
      if (e.has_started()) return e.started().estimated_seconds();
    }
    return -1.0;
  };
  grpc::Status status;
  Run(SmallRequest(1, 10), &status);  // calibrates
  ASSERT_TRUE(status.ok()) << status.error_message();
  // Shapes the estimate must follow (calibrated on the jobs before each): within a factor of 3 of the measurement.
  for (const auto& [width, steps] : {std::pair<int, int>{64, 10}, {128, 6}, {192, 4}}) {
    v1::GenerateRequest r = SmallRequest(2, steps);
    r.set_width(width);
    r.set_height(width);
    const auto events = Run(r, &status);
    ASSERT_TRUE(status.ok()) << status.error_message();
    const double estimate = estimate_of(events);
    double measured = 0;
    for (const auto& t : events.back().finished().timings()) {
      if (t.stage() == "text" || t.stage() == "sampling" || t.stage() == "decode") measured += t.seconds();
    }
    std::printf("estimate %.3f s, measured %.3f s for %dx%d, %d steps\n", estimate, measured, width, width, steps);
    EXPECT_GT(estimate, 0.0);
    EXPECT_LT(estimate, measured * 3 + 0.05);
    EXPECT_GT(estimate, measured / 3 - 0.05);
  }
  v1::GenerateRequest huge = SmallRequest(3, 1000);
  huge.set_width(2048);
  huge.set_height(2048);
  huge.set_batch_size(4);
  const auto refused = Run(huge, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("over the daemon's limit of 20 s (--max-job-seconds)"));
  EXPECT_TRUE(refused.empty());
}

// The seed-resize bomb (a 100000x100000 noise draw) is refused before it is queued: nothing is allocated.
TEST_F(GenerationTest, SeedResizeBombIsRefusedWithoutAllocating) {
  auto rss_mb = [] {
    std::ifstream statm("/proc/self/statm");
    long pages = 0, resident = 0;
    statm >> pages >> resident;
    return resident * (sysconf(_SC_PAGESIZE) / 1024.0) / 1024.0;
  };
  const double before = rss_mb();
  v1::GenerateRequest r = SmallRequest(1, 4);
  r.set_seed_resize_from_w(300000);
  r.set_seed_resize_from_h(300000);
  grpc::Status status;
  EXPECT_TRUE(Run(r, &status).empty());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("seed_resize_from_w 300000 is not allowed"));
  EXPECT_LT(rss_mb() - before, 64.0);  // the draw would have asked for ~22 GB
}

TEST_F(GenerationTest, JpegAndWebpResultsCarryTheInfotextInExif) {
  for (const auto format : {v1::IMAGE_FORMAT_JPEG, v1::IMAGE_FORMAT_WEBP}) {
    v1::GenerateRequest r = SmallRequest(4);
    r.set_prompt("ein Fuchs, 狐, \"quoted\"");
    r.mutable_output()->set_format(format);
    r.mutable_output()->set_quality(90);
    grpc::Status status;
    const auto results = Results(Run(r, &status));
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(results.size(), 1u);
    EXPECT_EQ(results[0].image().mime_type(), format == v1::IMAGE_FORMAT_JPEG ? "image/jpeg" : "image/webp");
    auto infotext = engine::ReadInfotext(results[0].image().data());
    ASSERT_TRUE(infotext.ok()) << infotext.status();
    EXPECT_EQ(*infotext, results[0].infotext());
    EXPECT_THAT(*infotext, HasSubstr("ein Fuchs, 狐"));
    EXPECT_EQ(Pixels(results[0].image().data()).size(0), 64);
  }
  // omit_infotext leaves it out of the file but still reports it.
  v1::GenerateRequest r = SmallRequest(4);
  r.mutable_output()->set_omit_infotext(true);
  grpc::Status status;
  const auto results = Results(Run(r, &status));
  ASSERT_EQ(results.size(), 1u);
  auto omitted = engine::ReadInfotext(results[0].image().data());
  ASSERT_TRUE(omitted.ok()) << omitted.status();
  EXPECT_EQ(*omitted, "");
  EXPECT_THAT(results[0].infotext(), HasSubstr("Seed: 4,"));
}

TEST_F(GenerationTest, Img2ImgResizesTheInitImage) {
  engine::PixelImage init;
  init.width = 96;
  init.height = 64;
  init.pixels.resize(96 * 64 * 3);
  for (size_t i = 0; i < init.pixels.size(); ++i) init.pixels[i] = static_cast<uint8_t>(i * 7 % 251);
  const std::string png = *engine::EncodePng(init);
  std::vector<at::Tensor> outputs;
  for (int mode = 0; mode <= 3; ++mode) {
    v1::GenerateRequest r = SmallRequest(9, 4);
    r.add_init_images(png);
    r.set_resize_mode(mode);
    r.set_denoising_strength(0.5);
    grpc::Status status;
    const auto results = Results(Run(r, &status));
    ASSERT_TRUE(status.ok()) << "mode " << mode << ": " << status.error_message();
    ASSERT_EQ(results.size(), 1u);
    const at::Tensor pixels = Pixels(results[0].image().data());
    EXPECT_EQ(pixels.size(0), 64) << mode;
    EXPECT_EQ(pixels.size(1), 64) << mode;
    EXPECT_THAT(results[0].infotext(), HasSubstr("Size: 64x64, Model hash: "));
    EXPECT_THAT(results[0].infotext(), HasSubstr("Denoising strength: 0.5"));
    outputs.push_back(pixels);
  }
  // Each mode starts from a different picture: stretched, centre crop, letterboxed, latent-resized.
  for (int a = 0; a < 4; ++a) {
    for (int b = a + 1; b < 4; ++b) EXPECT_FALSE(at::equal(outputs[a], outputs[b])) << "modes " << a << " and " << b;
  }
}

TEST_F(GenerationTest, AJobNamingAnotherCheckpointSwitchesToIt) {
  fs::copy_file(root_.path() / "models/Stable-diffusion/tiny.safetensors",
                root_.path() / "models/Stable-diffusion/other.safetensors");
  fs::copy_file(root_.path() / "models/Stable-diffusion/tiny.yaml", root_.path() / "models/Stable-diffusion/other.yaml");
  v1::GenerateRequest r = SmallRequest(12);
  SetOption(r, "sd_model_checkpoint", "other");
  grpc::Status status;
  const auto events = Run(r, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto results = Results(events);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_THAT(results[0].infotext(), HasSubstr("Model: other"));
  EXPECT_EQ(models_->current()->filename, "other.safetensors");
  std::vector<std::string> stages;
  for (const auto& t : events.back().finished().timings()) stages.push_back(t.stage());
  EXPECT_THAT(stages, ::testing::Contains("load"));
  // Same weights: the same image as the first checkpoint gives.
  v1::GenerateRequest back = SmallRequest(12);
  SetOption(back, "sd_model_checkpoint", "tiny.safetensors");
  const auto again = Results(Run(back, &status));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(at::equal(Pixels(again[0].image().data()), Pixels(results[0].image().data())));
}

// Hires fix: the second pass's size (scale, or resize with WebUI's cover-and-crop), each upscaler kind, progress
// over both passes, and WebUI's infotext keys (Size stays the first pass's).
TEST_F(GenerationTest, HiresFixUpscalesAndSaysSoInTheInfotext) {
  struct Case {
    std::function<void(v1::GenerateRequest&)> edit;
    int width, height;
    std::string keys;
  };
  const std::vector<Case> cases = {
      {[](auto& r) { r.set_hr_scale(2.0); }, 128, 128, "Denoising strength: 0.5, RNG: CPU, Hires upscale: 2.0, Hires steps: 2"},
      {[](auto& r) { r.set_hr_resize_x(96); r.set_hr_resize_y(128); r.set_hr_upscaler("Latent (nearest-exact)"); },
       96, 128, "Hires resize: 96x128, Hires steps: 2, Hires upscaler: Latent (nearest-exact)"},
      {[](auto& r) { r.set_hr_scale(1.5); r.set_hr_upscaler("Lanczos"); r.set_hr_sampler_name("DPM++ 2M");
                     r.set_hr_scheduler("Karras"); r.set_hr_prompt("a blue square"); },
       96, 96,
       "Hires sampler: DPM++ 2M, Hires prompt: a blue square, Hires schedule type: Karras, Hires upscale: 1.5, "
       "Hires steps: 2, Hires upscaler: Lanczos"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest r = SmallRequest(8, 3);
    r.set_enable_hr(true);
    r.set_hr_second_pass_steps(2);
    r.set_denoising_strength(0.5);
    c.edit(r);
    grpc::Status status;
    const auto events = Run(r, &status);
    ASSERT_TRUE(status.ok()) << c.keys << ": " << status.error_message();
    const auto results = Results(events);
    ASSERT_EQ(results.size(), 1u);
    const at::Tensor pixels = Pixels(results[0].image().data());
    EXPECT_EQ(pixels.size(1), c.width) << c.keys;
    EXPECT_EQ(pixels.size(0), c.height) << c.keys;
    EXPECT_THAT(results[0].infotext(), HasSubstr("Size: 64x64, "));
    EXPECT_THAT(results[0].infotext(), HasSubstr(c.keys));
    std::set<std::string> passes;
    float last = 0;
    for (const auto& e : events) {
      if (!e.has_progress()) continue;
      passes.insert(e.progress().pass());
      EXPECT_GE(e.progress().progress(), last);
      last = e.progress().progress();
    }
    EXPECT_TRUE(passes.count("hires")) << c.keys;
    EXPECT_FLOAT_EQ(last, 1.0f);
  }
  // Re-running the hires image from its infotext repeats it.
  v1::GenerateRequest r = SmallRequest(8, 3);
  r.set_enable_hr(true);
  r.set_hr_second_pass_steps(2);
  r.set_denoising_strength(0.5);
  grpc::Status status;
  const auto original = Results(Run(r, &status));
  ASSERT_EQ(original.size(), 1u);
  v1::GenerateRequest again;
  again.set_infotext(original[0].infotext());
  const auto rerun = Results(Run(again, &status));
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(rerun.size(), 1u);
  EXPECT_EQ(rerun[0].infotext(), original[0].infotext());
  EXPECT_TRUE(at::equal(Pixels(rerun[0].image().data()), Pixels(original[0].image().data())));
}

// A test picture and a mask: a white square (the part to repaint) on black.
std::string PatternPng(int width, int height) {
  engine::PixelImage image;
  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(width) * height * 3);
  for (size_t i = 0; i < image.pixels.size(); ++i) image.pixels[i] = static_cast<uint8_t>((i * 37) % 256);
  return *engine::EncodePng(image);
}
std::string SquareMaskPng(int width, int height, int x0, int y0, int side) {
  engine::PixelImage mask;
  mask.width = width;
  mask.height = height;
  mask.pixels.assign(static_cast<size_t>(width) * height * 3, 0);
  for (int y = y0; y < y0 + side; ++y) {
    for (int x = x0; x < x0 + side; ++x) {
      for (int c = 0; c < 3; ++c) mask.pixels[(static_cast<size_t>(y) * width + x) * 3 + c] = 255;
    }
  }
  return *engine::EncodePng(mask);
}

// Inpainting with each masked-content mode, whole picture and "Only masked": outside the mask's reach the result
// is the original exactly (the composite), inside it changes; "Only masked" returns the original's frame.
TEST_F(GenerationTest, InpaintingKeepsTheOriginalOutsideTheMask) {
  const std::string picture = PatternPng(96, 64);
  const at::Tensor original = Pixels(picture);
  const std::string mask = SquareMaskPng(96, 64, 36, 20, 24);  // repaint x 36..59, y 20..43
  for (const bool full_res : {false, true}) {
    for (int fill = 0; fill <= 3; ++fill) {
      v1::GenerateRequest r = SmallRequest(13, 4);
      r.add_init_images(picture);
      r.set_mask(mask);
      r.set_inpainting_fill(fill);
      r.set_inpaint_full_res(full_res);
      r.set_inpaint_full_res_padding(8);
      r.set_width(full_res ? 64 : 96);
      r.set_height(64);
      r.set_denoising_strength(0.9);
      grpc::Status status;
      const auto results = Results(Run(r, &status));
      ASSERT_TRUE(status.ok()) << fill << ": " << status.error_message();
      ASSERT_EQ(results.size(), 1u);
      const at::Tensor got = Pixels(results[0].image().data());
      ASSERT_EQ(got.sizes(), original.sizes()) << "fill " << fill << " full_res " << full_res;
      // The blur (4 px, a 21-tap kernel) reaches 10 px beyond the square.
      const at::Tensor outside_left = got.slice(1, 0, 24), want_left = original.slice(1, 0, 24);
      EXPECT_TRUE(at::equal(outside_left, want_left)) << "fill " << fill << " full_res " << full_res;
      EXPECT_TRUE(at::equal(got.slice(0, 0, 8), original.slice(0, 0, 8))) << "fill " << fill;
      const double inside =
          (got.slice(0, 26, 38).slice(1, 42, 54).to(at::kFloat) - original.slice(0, 26, 38).slice(1, 42, 54).to(at::kFloat))
              .abs()
              .mean()
              .item<double>();
      EXPECT_GT(inside, 5.0) << "fill " << fill << " full_res " << full_res;
      const std::string& info = results[0].infotext();
      EXPECT_THAT(info, HasSubstr("Mask blur: 4"));
      EXPECT_THAT(info, HasSubstr(full_res ? "Inpaint area: Only masked, Masked area padding: 8" : "Model: tiny"));
      if (fill != 1) {
        const char* const names[] = {"fill", "original", "latent noise", "latent nothing"};
        EXPECT_THAT(info, HasSubstr(std::string("Masked content: ") + names[fill]));
      }
    }
  }
  // Inverted: the square is kept, the rest repainted.
  v1::GenerateRequest r = SmallRequest(13, 4);
  r.add_init_images(picture);
  r.set_mask(mask);
  r.set_inpainting_mask_invert(1);
  r.set_inpaint_full_res(false);
  r.set_width(96);
  r.set_height(64);
  grpc::Status status;
  const auto results = Results(Run(r, &status));
  ASSERT_EQ(results.size(), 1u) << status.error_message();
  const at::Tensor got = Pixels(results[0].image().data());
  EXPECT_TRUE(at::equal(got.slice(0, 31, 33).slice(1, 47, 49), original.slice(0, 31, 33).slice(1, 47, 49)));
  EXPECT_THAT(results[0].infotext(), HasSubstr("Mask mode: Inpaint not masked"));
}

// 9-channel (inpainting) checkpoints: the conditioning is [rounded mask, latent of the image greyed where masked];
// tiny-sd widened to 9 input channels with zero weights computes exactly what tiny-sd computes, so its images
// match, and its infotext names the conditional mask weight.
TEST_F(GenerationTest, NineChannelCheckpointsGetTheirConditioning) {
  auto pipeline = engine::Sd1Pipeline::Create(models_->current(), *tokenizer_, nullptr);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  const at::Tensor image = Pixels(PatternPng(64, 64));
  const at::Tensor mask = Pixels(SquareMaskPng(64, 64, 16, 24, 20)).select(2, 0).contiguous();
  const at::Tensor eps = at::randn({1, 4, 8, 8}, at::TensorOptions().dtype(at::kFloat));
  const engine::Sd1Pipeline& sd_pipeline = **pipeline;
  const engine::ImageEncoder encode = [&sd_pipeline](const at::Tensor& pixels, const at::Tensor& noise) {
    return engine::EncodeInitImage(sd_pipeline, pixels, noise);
  };
  auto cond = engine::InpaintingConditioning(encode, image, mask, true, 1.0, 64, 64, eps);
  ASSERT_TRUE(cond.ok()) << cond.status();
  ASSERT_EQ(cond->sizes(), (std::vector<int64_t>{1, 5, 8, 8}));
  const at::Tensor want_mask = mask.to(at::kFloat).div(255).round().slice(0, 0, 64, 8).slice(1, 0, 64, 8);
  EXPECT_TRUE(at::equal((*cond)[0][0], want_mask));
  const at::Tensor greyed = at::where(mask.unsqueeze(2) >= 128, at::full({1}, 127.5), image.to(at::kFloat));
  auto want_latent = engine::EncodeInitImage(**pipeline, greyed, eps);
  ASSERT_TRUE(want_latent.ok());
  EXPECT_TRUE(at::allclose(cond->slice(1, 1, 5), *want_latent, 1e-4, 1e-4));

  // The widened checkpoint as a user installs it.
  const fs::path sd = root_.path() / "models/Stable-diffusion";
  auto weights = testing::ReadWeights(case_, "");
  at::Tensor& conv = weights.at("model.diffusion_model.input_blocks.0.0.weight");
  conv = at::cat({conv, at::zeros({conv.size(0), 5, conv.size(2), conv.size(3)})}, 1);
  std::vector<std::pair<std::string, at::Tensor>> tensors(weights.begin(), weights.end());
  ASSERT_TRUE(engine::WriteSafetensors(sd / "tiny-inpainting.safetensors", tensors, {}).ok());
  std::ifstream yaml_in(sd / "tiny.yaml");
  std::string yaml((std::istreambuf_iterator<char>(yaml_in)), std::istreambuf_iterator<char>());
  const size_t at = yaml.find("in_channels: 4");
  ASSERT_NE(at, std::string::npos);
  yaml.replace(at, 14, "in_channels: 9");
  std::ofstream(sd / "tiny-inpainting.yaml") << yaml;

  grpc::Status status;
  const auto plain = Results(Run(SmallRequest(21), &status));
  ASSERT_EQ(plain.size(), 1u);
  v1::GenerateRequest r = SmallRequest(21);
  SetOption(r, "sd_model_checkpoint", "tiny-inpainting");
  const auto widened = Results(Run(r, &status));
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(widened.size(), 1u);
  EXPECT_TRUE(at::equal(Pixels(widened[0].image().data()), Pixels(plain[0].image().data())));
  EXPECT_THAT(widened[0].infotext(), HasSubstr("Conditional mask weight: 1.0"));
  // With live weights on the extra channels the conditioning reaches the UNet: the image changes.
  conv = at::cat({conv.slice(1, 0, 4), at::randn({conv.size(0), 5, conv.size(2), conv.size(3)}) * 0.5}, 1);
  tensors.assign(weights.begin(), weights.end());
  ASSERT_TRUE(engine::WriteSafetensors(sd / "tiny-inpainting-live.safetensors", tensors, {}).ok());
  std::ofstream(sd / "tiny-inpainting-live.yaml") << yaml;
  v1::GenerateRequest live = SmallRequest(21);
  SetOption(live, "sd_model_checkpoint", "tiny-inpainting-live");
  const auto changed = Results(Run(live, &status));
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(changed.size(), 1u);
  EXPECT_FALSE(at::equal(Pixels(changed[0].image().data()), Pixels(plain[0].image().data())));
  v1::GenerateRequest inpaint = SmallRequest(21);
  inpaint.add_init_images(PatternPng(64, 64));
  inpaint.set_mask(SquareMaskPng(64, 64, 16, 24, 20));
  const auto inpainted = Results(Run(inpaint, &status));
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(inpainted.size(), 1u);
}

// Unloading frees the model: nothing the runner built from it keeps the weights alive.
TEST_F(GenerationTest, UnloadFreesTheWeightsTheRunnerUsed) {
  grpc::Status status;
  ASSERT_EQ(Results(Run(SmallRequest(1), &status)).size(), 1u);
  std::weak_ptr<const engine::Sd1Weights> used = models_->current();
  ASSERT_FALSE(used.expired());
  auto stub = v1::Models::NewStub(channel_);
  grpc::ClientContext context;
  v1::UnloadModelResponse response;
  ASSERT_TRUE(stub->UnloadModel(&context, v1::UnloadModelRequest(), &response).ok());
  EXPECT_TRUE(used.expired());
  Run(SmallRequest(1), &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("no checkpoint is loaded"));
}

// WebUI's show_progress_every_n_steps: -1 previews only a batch's last step, 0 (like 1) every step; its default
// show_progress_type "Approx NN" (a network not shipped) falls back to the cheap approximation.
TEST_F(GenerationTest, PreviewCadenceFollowsWebUisOptions) {
  for (const double every : {-1.0, 0.0}) {
    v1::GenerateRequest r = SmallRequest(2, 5);
    SetOption(r, "show_progress_every_n_steps", every);
    SetOption(r, "show_progress_type", "Approx NN");
    grpc::Status status;
    const auto events = Run(r, &status);
    ASSERT_TRUE(status.ok()) << every << ": " << status.error_message();
    int previews = 0;
    for (const auto& e : events) {
      if (!e.has_progress() || !e.progress().has_preview()) continue;
      ++previews;
      if (every < 0) {
        EXPECT_EQ(e.progress().sampling_step(), 5);
      }
      EXPECT_EQ(Pixels(e.progress().preview().data()).size(0), 8);  // approx cheap: one pixel per latent pixel
    }
    EXPECT_GE(previews, 1) << every;
  }
}

TEST_F(GenerationTest, BadRequestsGetClearStatusesAndTheDaemonKeepsServing) {
  struct Case {
    std::string name;
    std::function<void(v1::GenerateRequest&)> edit;
    grpc::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"unknown sampler", [](auto& r) { r.set_sampler_name("Euler z"); }, grpc::StatusCode::INVALID_ARGUMENT,
       "DPM++ 2M"},
      {"unknown scheduler", [](auto& r) { r.set_scheduler("Karass"); }, grpc::StatusCode::INVALID_ARGUMENT, "Karras"},
      {"unknown checkpoint", [](auto& r) { SetOption(r, "sd_model_checkpoint", "sd_xl_base_1.0"); },
       grpc::StatusCode::NOT_FOUND, "tiny.safetensors"},
      {"unknown VAE", [](auto& r) { SetOption(r, "sd_vae", "kl-f8-anime2.ckpt"); }, grpc::StatusCode::NOT_FOUND,
       "kl-f8-anime2"},
      {"huge width", [](auto& r) { r.set_width(100000); }, grpc::StatusCode::INVALID_ARGUMENT,
       "multiple of 8 from 64 to 4096"},
      {"negative steps", [](auto& r) { r.set_steps(-1); }, grpc::StatusCode::INVALID_ARGUMENT, "use 1 to"},
      {"huge batch", [](auto& r) { r.set_batch_size(10000); }, grpc::StatusCode::INVALID_ARGUMENT,
       "images per job"},
      {"corrupt init image", [](auto& r) { r.add_init_images(std::string("\x89PNG\r\n\x1a\nbroken", 14)); },
       grpc::StatusCode::INVALID_ARGUMENT, "init_images[0]"},
      {"60000x60000 init image", [](auto& r) { r.add_init_images(HugeJpeg()); }, grpc::StatusCode::INVALID_ARGUMENT,
       "megapixels"},
      {"two init images", [](auto& r) { r.add_init_images(HugeJpeg()); r.add_init_images(HugeJpeg()); },
       grpc::StatusCode::UNIMPLEMENTED, "2 init images"},
      {"5 MB prompt", [](auto& r) { r.set_prompt(std::string(5 << 20, 'a')); }, grpc::StatusCode::INVALID_ARGUMENT,
       "the limit is"},
      {"unknown RNG", [](auto& r) { SetOption(r, "randn_source", "TPU"); }, grpc::StatusCode::INVALID_ARGUMENT,
       "CPU"},
      {"clip skip 13", [](auto& r) { SetOption(r, "CLIP_stop_at_last_layers", 13.0); },
       grpc::StatusCode::INVALID_ARGUMENT, "CLIP_stop_at_last_layers"},
      {"unknown plugin", [](auto& r) { (*r.mutable_alwayson_scripts()->mutable_fields())["controlnet"]; },
       grpc::StatusCode::INVALID_ARGUMENT, "loaded plugins: abi_v10, export, grayscale, hook_probe, invert, probe_v11"},
      {"unknown hires upscaler", [](auto& r) { r.set_enable_hr(true); r.set_hr_upscaler("SwinIR 4x"); },
       grpc::StatusCode::INVALID_ARGUMENT, "Latent (nearest-exact)"},
      {"hires too large", [](auto& r) { r.set_enable_hr(true); r.set_hr_scale(100.0); },
       grpc::StatusCode::INVALID_ARGUMENT, "hr_scale 100 is outside"},
      {"TAESD without a decoder", [](auto& r) { r.mutable_preview()->set_method(v1::PREVIEW_METHOD_TAESD); },
       grpc::StatusCode::FAILED_PRECONDITION, "VAE-approx"},
      // Every limit before the job is queued (issue 17's probes).
      {"seed resize bomb", [](auto& r) { r.set_seed_resize_from_w(100000); r.set_seed_resize_from_h(100000); },
       grpc::StatusCode::INVALID_ARGUMENT, "seed_resize_from_w 100000 is not allowed: use 0 (off) or at most 4096"},
      {"2000 AND parts",
       [](auto& r) {
         std::string p = "a cat";
         for (int i = 0; i < 1999; ++i) p += " AND a cat";
         r.set_prompt(p);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt has 2000 AND parts; at most 32"},
      {"300 prompt-editing switches",
       [](auto& r) {
         r.set_steps(400);
         std::string p;
         for (int i = 1; i <= 300; ++i) p += "[a" + std::to_string(i) + ":b:" + std::to_string(i) + "] ";
         r.set_prompt(p);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt needs more than 256 text conditionings"},
      {"deep emphasis",
       [](auto& r) { r.set_prompt(std::string(1000, '(') + "cat" + std::string(1000, ')')); },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt: the emphasis weight"},
      {"huge hr_prompt", [](auto& r) { r.set_hr_prompt(std::string(300 * 1024, 'a')); },
       grpc::StatusCode::INVALID_ARGUMENT, "hr_prompt is 307200 bytes"},
      {"8000-character sampler", [](auto& r) { r.set_sampler_name(std::string(8000, 'x')); },
       grpc::StatusCode::INVALID_ARGUMENT, "(8000 bytes); valid samplers"},
      {"mode 99", [](auto& r) { r.set_mode(static_cast<v1::Mode>(99)); }, grpc::StatusCode::INVALID_ARGUMENT,
       "mode 99 is not one of MODE_TXT2IMG, MODE_IMG2IMG"},
      {"preview method 99", [](auto& r) { r.mutable_preview()->set_method(static_cast<v1::PreviewMethod>(99)); },
       grpc::StatusCode::INVALID_ARGUMENT, "preview.method 99"},
      {"output format 99", [](auto& r) { r.mutable_output()->set_format(static_cast<v1::ImageFormat>(99)); },
       grpc::StatusCode::INVALID_ARGUMENT, "output.format 99"},
      {"NaN image_cfg_scale", [](auto& r) { r.set_image_cfg_scale(std::nan("")); }, grpc::StatusCode::INVALID_ARGUMENT,
       "image_cfg_scale is nan: a finite number is needed"},
      {"NaN in override_settings", [](auto& r) { SetOption(r, "eta_ddim", std::nan("")); },
       grpc::StatusCode::INVALID_ARGUMENT, "override_settings['eta_ddim'] is nan"},
      {"long unknown checkpoint", [](auto& r) { SetOption(r, "sd_model_checkpoint", std::string(100000, 'c')); },
       grpc::StatusCode::NOT_FOUND, "(100000 bytes) not found"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest r = SmallRequest(1);
    c.edit(r);
    grpc::Status status;
    const auto events = Run(r, &status);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.name;
    // Named, never echoed whole: no message repeats a long input.
    EXPECT_LT(status.error_message().size(), 2000u) << c.name;
    EXPECT_TRUE(events.empty()) << c.name << ": refused at admission";
  }
  // Job ids are quoted the same way.
  const grpc::Status unknown_job = CancelJob(std::string(100000, 'j'));
  EXPECT_EQ(unknown_job.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(unknown_job.error_message(), HasSubstr("(100000 bytes)"));
  EXPECT_LT(unknown_job.error_message().size(), 300u);
  // An empty prompt is valid.
  v1::GenerateRequest empty = SmallRequest(1);
  empty.set_prompt("");
  grpc::Status status;
  EXPECT_EQ(Results(Run(empty, &status)).size(), 1u);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

}  // namespace
}  // namespace atelier
