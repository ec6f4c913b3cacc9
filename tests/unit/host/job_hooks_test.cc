// Hook dispatch through real loaded plugins: arguments, every hook's tensors in and out, plugin errors, and DLPack
// ownership (each deleter runs exactly once).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "atelier/sdk/tensor.h"
#include "engine/models/checkpoint_loader.h"
#include "image/image_codec.h"
#include "engine/sampling/samplers.h"
#include "host/job_hooks.h"
#include "test_support.h"

namespace atelier {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::BuiltPlugin;
using testing::CopyPlugin;
using testing::RecordingSink;
using testing::TempDir;
using testing::TestPlugin;

class JobHooksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CopyPlugin(BuiltPlugin("invert"), dir_.path(), "invert.so");
    CopyPlugin(TestPlugin("hook_probe"), dir_.path(), "hook_probe.so");
    host::PluginLoaderOptions options;
    options.environment.host_version = "test";
    options.environment.device = "cpu";
    registry_ = host::PluginRegistry::LoadDirectory(dir_.path(), std::move(options));
    ASSERT_EQ(registry_->plugins().size(), 2u);
  }

  absl::StatusOr<std::unique_ptr<host::JobHooks>> Begin(std::map<std::string, std::string> args) {
    host::JobHookInfo info;
    info.job_id = "job-1";
    info.steps = 10;
    return host::JobHooks::Begin(*registry_, &sink_, info, args);
  }

  TempDir dir_;
  std::unique_ptr<host::PluginRegistry> registry_;
  RecordingSink sink_;
};

TEST_F(JobHooksTest, PluginsWithoutArgumentsStayOut) {
  auto hooks = Begin({});
  ASSERT_TRUE(hooks.ok()) << hooks.status();
  EXPECT_TRUE((*hooks)->Participants().empty());
  EXPECT_FALSE((*hooks)->HasPostprocessFrames());
  EXPECT_FALSE((*hooks)->HasCfgHooks());
  at::Tensor frames = at::rand({1, 3, 4, 4});
  at::Tensor before = frames.clone();
  ASSERT_TRUE((*hooks)->PostprocessFrames(frames).ok());
  EXPECT_TRUE(frames.equal(before));
}

// Sends frames through the job's frame hooks and returns what reaches the client's end.
std::vector<host::JobFrame> SendFrames(host::JobHooks& hooks, const std::vector<at::Tensor>& images) {
  std::vector<host::JobFrame> out;
  const host::FrameSink sink = [&out](const host::JobFrame& f) {
    out.push_back(f);
    return absl::OkStatus();
  };
  for (size_t i = 0; i < images.size(); ++i) {
    host::JobFrame frame;
    frame.index = static_cast<int>(i);
    frame.seed = 100 + static_cast<int64_t>(i);
    frame.infotext = "a cat";
    frame.image = images[i];
    EXPECT_TRUE(hooks.SendFrame(frame, sink).ok());
  }
  return out;
}

TEST_F(JobHooksTest, TemplateInvertsFramesWebUiStyleArgs) {
  auto hooks = Begin({{"invert", R"({"args": [{"enabled": true, "strength": 1.0}]})"}});
  ASSERT_TRUE(hooks.ok()) << hooks.status();
  EXPECT_THAT((*hooks)->Participants(), ElementsAre("invert"));
  const at::Tensor a = at::rand({3, 5, 7}), b = at::rand({3, 5, 7});
  const auto out = SendFrames(**hooks, {a, b});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(at::allclose(out[0].image, 1 - a));
  EXPECT_TRUE(at::allclose(out[1].image, 1 - b));
  EXPECT_EQ(out[1].seed, 101);  // each frame keeps its own seed and infotext
  std::vector<std::pair<std::string, std::string>> extra;
  (*hooks)->InfotextAdditions(0, extra);
  EXPECT_THAT(extra, ElementsAre(std::make_pair(std::string("Invert"), std::string("1.0"))));
}

TEST_F(JobHooksTest, TemplateHonoursStrengthAndStridedInput) {
  auto hooks = Begin({{"invert", R"({"args": [true, 0.25]})"}});
  ASSERT_TRUE(hooks.ok()) << hooks.status();
  // A non-contiguous view: the plugin must follow DLPack strides.
  at::Tensor base = at::rand({7, 5, 3});
  at::Tensor input = base.permute({2, 1, 0});
  ASSERT_FALSE(input.is_contiguous());
  const auto out = SendFrames(**hooks, {input});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(at::allclose(out[0].image, input + 0.25 * (1 - 2 * input)));
}

// The sampler drives the plugin's three CFG hooks: hook_probe doubles x before the model, adds 1 to its
// prediction and negates the guided result. With a zero-eps model and DPM++ 2M over one step (the result is the
// guided x0), the sample is -(2 * start + 1).
TEST_F(JobHooksTest, SamplerCallsTheCfgHooksAtTheirPlaces) {
  auto hooks = Begin({{"hook_probe", "{}"}});
  ASSERT_TRUE(hooks.ok()) << hooks.status();
  const engine::ModelSchedule schedule(engine::ComputeAlphasCumprod(engine::ScheduleConfig()));
  engine::SamplingSettings settings;
  settings.choice = *engine::ResolveSampler("DPM++ 2M", "Karras");
  settings.steps = 1;
  engine::SamplingInputs in;
  int calls = 0;
  in.model = [&](engine::ModelCall& call) -> absl::StatusOr<at::Tensor> {
    const at::Tensor& x = call.x;
    ++calls;
    return at::zeros_like(x);
  };
  in.conditioning.cond.push_back({engine::WeightedCond{engine::ScheduledCond::Fixed(at::rand({77, 768})), 1.0}});
  in.conditioning.uncond.push_back(engine::ScheduledCond::Fixed(at::rand({77, 768})));
  in.noise = at::randn({1, 4, 8, 8});
  in.step_noise = [](double, double) { return at::zeros({1, 4, 8, 8}); };
  in.extension = hooks->get();
  const at::Tensor noise = in.noise;
  auto result = engine::Sample(settings, schedule, std::move(in));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(calls, 1);
  const double sigma0 = result->sigmas[0].item<double>();
  EXPECT_TRUE(at::allclose(result->latent, -(2 * noise * sigma0 + 1), 1e-5, 1e-5));
}

TEST_F(JobHooksTest, BadArgumentsFailTheJobWithThePluginsMessage) {
  auto hooks = Begin({{"invert", R"({"args": [{"enabled": true, "strength": 2}]})"}});
  ASSERT_FALSE(hooks.ok());
  EXPECT_EQ(hooks.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(hooks.status().message(), HasSubstr("plugin 'invert' failed in process: strength 2 is outside [0, 1]"));
}

TEST_F(JobHooksTest, ProbeSeesAndReplacesEveryHooksTensors) {
  auto hooks = Begin({{"hook_probe", "{}"}});
  ASSERT_TRUE(hooks.ok()) << hooks.status();
  host::JobHooks& h = **hooks;
  EXPECT_TRUE(h.HasCfgHooks());
  EXPECT_TRUE(h.HasUnetResiduals());
  EXPECT_TRUE(h.HasUnetBlock());

  host::CfgDenoiserTensors t;
  t.x = at::rand({2, 4, 8, 8});
  t.sigma = at::full({2}, 3.0);
  t.text_cond = at::rand({1, 77, 768});
  t.text_uncond = at::rand({1, 77, 768});
  t.cond_rows = 1;
  const at::Tensor x = t.x.clone();
  ASSERT_TRUE(h.CfgDenoiser(t).ok());
  EXPECT_TRUE(at::allclose(t.x, 2 * x));

  at::Tensor denoised = x.clone();
  ASSERT_TRUE(h.CfgDenoised(0, 10, 1, denoised).ok());
  EXPECT_TRUE(at::allclose(denoised, x + 1));

  at::Tensor guided = x.clone();
  ASSERT_TRUE(h.CfgAfterCfg(0, 10, guided).ok());
  EXPECT_TRUE(at::allclose(guided, -x));

  std::array<at::Tensor, ATELIER_UNET_RESIDUALS> residuals;
  residuals[12] = at::ones_like(x);  // residuals of several plugins add up
  ASSERT_TRUE(h.UnetResiduals(0, 10, 1, x, at::full({2}, 999.0), at::rand({2, 77, 768}), at::Tensor(), residuals).ok());
  EXPECT_TRUE(at::allclose(residuals[0], at::ones_like(x)));
  EXPECT_TRUE(at::allclose(residuals[12], 3 * x + 1));
  for (int i = 1; i < 12; ++i) EXPECT_FALSE(residuals[i].defined()) << i;

  at::Tensor hidden = at::rand({2, 320, 8, 8});
  const at::Tensor hidden_before = hidden.clone();
  ASSERT_TRUE(h.UnetBlock(7, ATELIER_UNET_OUTPUT_BLOCK, 3, 1, hidden, at::rand({2, 77, 768})).ok());
  EXPECT_TRUE(at::allclose(hidden, hidden_before + 7));

  at::Tensor frames = at::rand({3, 3, 4, 6});
  const at::Tensor frames_before = frames.clone();
  ASSERT_TRUE(h.PostprocessFrames(frames).ok());
  ASSERT_EQ(frames.size(0), 6);  // plugins may change the frame count (RIFE)
  EXPECT_TRUE(frames[4].equal(frames_before[2]));
  EXPECT_TRUE(frames[5].equal(frames_before[2]));

  ASSERT_TRUE(h.ExportMedia(frames, std::vector<std::string>(6, "a cat, Steps: 20")).ok());
  ASSERT_EQ(sink_.artifacts.size(), 1u);
  EXPECT_EQ(sink_.artifacts[0].plugin, "hook_probe");
  EXPECT_EQ(sink_.artifacts[0].name, "probe.txt");
  EXPECT_EQ(sink_.artifacts[0].data, "frames=6 first=a cat, Steps: 20");
  ASSERT_EQ(sink_.frames.size(), 1u);
  EXPECT_EQ(sink_.frames[0].width, 6);
  EXPECT_EQ(sink_.frames[0].height, 4);
  // The host encoded the float frame as PNG: decode it and compare with the frame's values.
  auto decoded = engine::DecodePng(sink_.frames[0].png);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const at::Tensor expected = frames[0].clamp(0, 1).mul(255).round().to(at::kByte).permute({1, 2, 0}).contiguous();
  ASSERT_EQ(decoded->pixels.size(), static_cast<size_t>(expected.numel()));
  EXPECT_TRUE(std::equal(decoded->pixels.begin(), decoded->pixels.end(), expected.data_ptr<uint8_t>()));
  EXPECT_EQ(sink_.progress.back().stage, "probe-export");

  hooks->reset();  // job_end: job-scoped host calls are still valid inside it
  EXPECT_EQ(sink_.progress.back().stage, "job_end");
}

TEST_F(JobHooksTest, ModelLoadedReachesPlugins) {
  registry_->NotifyModelLoaded("anime.safetensors [0123456789]", "anime.safetensors", 9);
  registry_->NotifyModelLoaded("reject.safetensors [ffffffffff]", "reject.safetensors", 4);  // logged, not fatal
  auto hooks = Begin({{"hook_probe", R"({"args": ["report_model"]})"}});
  ASSERT_TRUE(hooks.ok()) << hooks.status();
  ASSERT_EQ(sink_.artifacts.size(), 1u);
  EXPECT_EQ(sink_.artifacts[0].data, "anime.safetensors [0123456789]|anime.safetensors|9");
}

TEST_F(JobHooksTest, PluginErrorsCarryTheirMessage) {
  {
    auto hooks = Begin({{"hook_probe", R"({"args": ["fail_process"]})"}});
    ASSERT_FALSE(hooks.ok());
    EXPECT_THAT(hooks.status().message(),
                HasSubstr("plugin 'hook_probe' failed in process: probe: fail_process requested for job job-1"));
  }
  {
    auto hooks = Begin({{"hook_probe", R"({"args": ["fail_postprocess"]})"}});
    ASSERT_TRUE(hooks.ok());
    at::Tensor frames = at::rand({1, 3, 4, 4});
    const absl::Status status = (*hooks)->PostprocessFrames(frames);
    EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
    EXPECT_THAT(status.message(), HasSubstr("plugin 'hook_probe' failed in postprocess_frames: probe: fail_postprocess"));
  }
  {
    auto hooks = Begin({{"hook_probe", R"({"args": ["bad_shape"]})"}});
    ASSERT_TRUE(hooks.ok());
    at::Tensor x = at::rand({2, 4, 8, 8});
    const absl::Status status = (*hooks)->CfgDenoised(0, 10, 1, x);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("returned x of shape [3] from cfg_denoised; expected [2, 4, 8, 8]"));
  }
}

// ---- DLPack ownership ----

int g_source_frees = 0;

TEST(DlpackTest, ExportAdoptRoundTripFreesOnce) {
  g_source_frees = 0;
  {
    auto* buffer = new float[12];
    for (int i = 0; i < 12; ++i) buffer[i] = static_cast<float>(i);
    at::Tensor source = at::from_blob(
        buffer, {3, 4}, [](void* p) { delete[] static_cast<float*>(p); ++g_source_frees; }, at::kFloat);
    DLManagedTensor* managed = sdk::Export(source);
    source.reset();
    EXPECT_EQ(g_source_frees, 0);  // the DLManagedTensor keeps the storage alive
    at::Tensor adopted = sdk::Adopt(managed);
    EXPECT_EQ(adopted[2][3].item<float>(), 11.0f);
    at::Tensor shared = adopted.view({12});
    adopted.reset();
    EXPECT_EQ(g_source_frees, 0);
    EXPECT_EQ(shared[5].item<float>(), 5.0f);
  }
  EXPECT_EQ(g_source_frees, 1);
}

TEST(DlpackTest, BorrowAndViewShareMemoryWithoutOwnership) {
  g_source_frees = 0;
  {
    auto* buffer = new float[6]{1, 2, 3, 4, 5, 6};
    at::Tensor source = at::from_blob(
        buffer, {2, 3}, [](void* p) { delete[] static_cast<float*>(p); ++g_source_frees; }, at::kFloat);
    at::Tensor transposed = source.t();
    {
      sdk::Borrow borrowed(transposed);
      ASSERT_NE(borrowed.get(), nullptr);
      EXPECT_EQ(borrowed.get()->ndim, 2);
      EXPECT_EQ(borrowed.get()->strides[0], 1);
      EXPECT_EQ(borrowed.get()->strides[1], 3);
      at::Tensor view = sdk::View(borrowed.get());
      EXPECT_EQ(view.data_ptr(), transposed.data_ptr());
      EXPECT_TRUE(view.equal(transposed));
    }
    EXPECT_EQ(g_source_frees, 0);
    EXPECT_EQ(sdk::Borrow(at::Tensor()).get(), nullptr);
  }
  EXPECT_EQ(g_source_frees, 1);
}

// A plugin-allocated output crossing back to the host: its deleter (the plugin's) runs exactly once.
struct CountingShim {
  void (*original)(DLManagedTensor*);
  void* original_ctx;
  static int calls;
  static void Delete(DLManagedTensor* self) {
    auto* shim = static_cast<CountingShim*>(self->manager_ctx);
    ++calls;
    self->manager_ctx = shim->original_ctx;
    self->deleter = shim->original;
    delete shim;
    self->deleter(self);
  }
};
int CountingShim::calls = 0;

TEST_F(JobHooksTest, PluginOutputDeleterRunsOnce) {
  const host::Plugin* probe = registry_->Find("hook_probe");
  ASSERT_NE(probe, nullptr);
  const atelier_plugin_descriptor& d = probe->descriptor();
  atelier_job_state* job_state = nullptr;
  atelier_job_info info{};
  info.struct_size = sizeof(info);
  info.job_id = "direct";
  atelier_error err{};
  ASSERT_EQ(d.process(probe->state(), nullptr, &info, "{}", &job_state, &err), ATELIER_OK);

  at::Tensor frames = at::rand({2, 3, 4, 4});
  sdk::Borrow input(frames);
  atelier_frames_params params{};
  params.struct_size = sizeof(params);
  params.frames = input.get();
  ASSERT_EQ(d.postprocess_frames(probe->state(), job_state, &params, &err), ATELIER_OK) << err.message;
  ASSERT_NE(params.frames_out, nullptr);
  CountingShim::calls = 0;
  params.frames_out->manager_ctx =
      new CountingShim{params.frames_out->deleter, params.frames_out->manager_ctx};
  params.frames_out->deleter = &CountingShim::Delete;
  {
    at::Tensor out = sdk::Adopt(params.frames_out);
    EXPECT_EQ(out.size(0), 4);
    EXPECT_TRUE(out[1].equal(frames[0]));
    at::Tensor slice = out.slice(0, 2, 4);
    out.reset();
    EXPECT_EQ(CountingShim::calls, 0);
  }
  EXPECT_EQ(CountingShim::calls, 1);
  // The job handle was null: the probe's report in job_end gets an error from the host, not a crash.
  d.job_end(probe->state(), job_state);
}

}  // namespace
}  // namespace atelier
