// The ControlNet plugin loaded from build/plugins through the real host layer (JobHooks, the C ABI, tensor files,
// the image codec) against the engine-level composition built directly from the plugin's own pieces (canny,
// the resize mode, the hint encoder, the net, Balanced scales, the UNet's residual path), sampling the same job
// step for step: every UNet call's eps must be the same.
#include <gtest/gtest.h>

#include <filesystem>

#include <ATen/ATen.h>
#include <opencv2/core.hpp>

#include "absl/strings/escaping.h"
#include "control_model.h"
#include "control_weights.h"
#include "engine/io/model_folders.h"
#include "engine/models/unet.h"
#include "engine/sampling/samplers.h"
#include "engine/sampling/sampler_table.h"
#include "fixture_case.h"
#include "hint_image.h"
#include "host/job_hooks.h"
#include "host/plugin_registry.h"
#include "image/image_codec.h"
#include "model_configs.h"
#include "preprocessors.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
namespace cn = controlnet;

// The engine-level composition: residuals from the net, added through the UNet call (what the plugin must equal).
class DirectControl : public engine::JobExtension {
 public:
  DirectControl(const cn::ControlNetModel& net, at::Tensor guided, double weight)
      : net_(net), guided_(std::move(guided)), weight_(weight) {}
  Points points() const override {
    Points p;
    p.model_call = true;
    return p;
  }
  absl::StatusOr<at::Tensor> CallModel(engine::ModelCall& call, const engine::ModelCallNext& next) override {
    auto raw = net_.Forward(call.x, call.timesteps, call.context, guided_);
    if (!raw.ok()) return raw.status();
    cn::Residuals sum;
    cn::AccumulateResiduals(sum, *raw, cn::ControlScales(weight_, false, {}), false, call.cond_rows, call.x.size(0));
    for (int i = 0; i < cn::kResiduals; ++i) call.residuals[i] = sum[i];
    return next(call);
  }

 private:
  const cn::ControlNetModel& net_;
  at::Tensor guided_;
  double weight_;
};

TEST(ControlNetPluginTest, JobThroughTheHostEqualsTheEngineLevelCompositionStepForStep) {
  for (const auto& c : testing::CasesOf("controlnet-tiny")) {
    SCOPED_TRACE(c.dir.string());
    // The base UNet the case names, and the schedule of an SD1.x model (linear betas 0.00085..0.012).
    const fs::path base_dir = c.dir / ".." / "plugin-base-unet";
    std::unique_ptr<engine::UNet> unet;
    for (const auto& b : testing::LoadCases("plugin-base-unet")) {
      if (!fs::equivalent(b.dir, base_dir)) continue;
      auto u = engine::UNet::Create(testing::UNetConfigOf(b.json["config"]), testing::ReadWeights(b, "model.diffusion_model."));
      ASSERT_TRUE(u.ok()) << u.status();
      unet = std::move(*u);
    }
    ASSERT_NE(unet, nullptr);
    const at::Tensor betas = at::linspace(std::sqrt(0.00085), std::sqrt(0.012), 1000, at::kDouble).pow(2);
    const engine::ModelSchedule schedule(at::cumprod(1 - betas, 0).to(at::kFloat));

    // The job: 128x128 pixels (the latent of the case's x), one unit on a control image with edges.
    const int64_t h = c.io.at("x").size(2), w = c.io.at("x").size(3);
    engine::PixelImage image;
    image.width = static_cast<int>(w * 8);
    image.height = static_cast<int>(h * 8);
    image.pixels.assign(static_cast<size_t>(image.width * image.height * 3), 0);
    for (int y = 20; y < 80; ++y) {
      for (int x = 30; x < 100; ++x) image.pixels[(y * image.width + x) * 3 + (x + y) % 3] = 255;
    }
    auto png = engine::EncodePng(image);
    ASSERT_TRUE(png.ok());
    const double weight = 0.8;
    const std::string args = R"({"args": [{"enabled": true, "module": "canny", "model": "weights", "weight": 0.8,
        "processor_res": )" + std::to_string(image.height) + R"(, "image": ")" + absl::Base64Escape(*png) + R"("}]})";

    // The plugin, loaded as the daemon loads it, with the case's weights as models/ControlNet/weights.safetensors.
    testing::TempDir root;
    fs::create_directories(root.path() / "models" / "ControlNet");
    fs::copy_file(testing::WeightsFile(c), root.path() / "models" / "ControlNet" / "weights.safetensors");
    testing::TempDir plugins;
    testing::CopyPlugin(testing::BuiltPlugin("controlnet"), plugins.path(), "controlnet.so");
    auto folders = engine::ModelFolders::Open(root.path() / "models");
    ASSERT_TRUE(folders.ok());
    host::PluginLoaderOptions options;
    options.environment.host_version = "test";
    options.environment.device = "cpu";
    options.environment.model_folders = &*folders;
    auto registry = host::PluginRegistry::LoadDirectory(plugins.path(), std::move(options));
    ASSERT_EQ(registry->plugins().size(), 1u) << "refused: " << (registry->refused().empty() ? "" : registry->refused()[0].reason);
    testing::RecordingSink sink;
    host::JobHookInfo info;
    info.job_id = "job";
    info.width = static_cast<int>(w * 8);
    info.height = static_cast<int>(h * 8);
    info.steps = 4;
    info.seed = 1;
    auto hooks = host::JobHooks::Begin(*registry, &sink, info, {{"controlnet", args}});
    ASSERT_TRUE(hooks.ok()) << hooks.status();
    ASSERT_EQ((*hooks)->Participants().size(), 1u);

    // The same pieces directly.
    engine::WeightMap raw = testing::ReadWeights(c, "");
    auto net = cn::ControlNetModel::Create(*cn::NormalizeControlNetKeys(raw, "w"), "w", at::kCPU, at::kFloat);
    ASSERT_TRUE(net.ok());
    cv::Mat rgb(image.height, image.width, CV_8UC3, image.pixels.data());
    const cn::ModuleInfo* canny = cn::FindModule("canny");
    auto map = cn::RunPreprocessor(*canny, rgb, cn::BoundParams(*canny, image.height, -1, -1));
    ASSERT_TRUE(map.ok());
    at::Tensor hint = cn::HintTensor(cn::FitDetectedMap(*map, cn::ResizeMode::kCropAndResize, image.height, image.width));
    auto guided = (*net)->EncodeHint(hint);
    ASSERT_TRUE(guided.ok());
    DirectControl direct(**net, *guided, weight);

    auto sample = [&](engine::JobExtension* extension, std::vector<at::Tensor>& eps_log) {
      engine::SamplingInputs in;
      in.model = [&](engine::ModelCall& call) -> absl::StatusOr<at::Tensor> {
        engine::UNetCallOptions o;
        for (const at::Tensor& r : call.residuals) {
          if (r.defined()) o.residuals = &call.residuals;
        }
        auto eps = unet->Forward(call.x, call.timesteps, call.context, o);
        if (eps.ok()) eps_log.push_back(eps->clone());
        return eps;
      };
      in.conditioning.cond.push_back(
          {engine::WeightedCond{engine::ScheduledCond::Fixed(c.io.at("context")[0]), 1.0}});
      in.conditioning.uncond.push_back(engine::ScheduledCond::Fixed(c.io.at("context")[1]));
      at::manual_seed(3);
      in.noise = at::randn({1, 4, h, w});
      in.step_noise = [](double, double) { return at::Tensor(); };
      in.extension = extension;
      engine::SamplingSettings s;
      s.choice = *engine::ResolveSampler("DPM++ 2M", "Karras");
      s.steps = 4;
      s.cfg_scale = 7;
      return engine::Sample(s, schedule, std::move(in));
    };
    std::vector<at::Tensor> plugin_eps, direct_eps, plain_eps;
    auto via_plugin = sample(hooks->get(), plugin_eps);
    ASSERT_TRUE(via_plugin.ok()) << via_plugin.status();
    auto via_engine = sample(&direct, direct_eps);
    ASSERT_TRUE(via_engine.ok()) << via_engine.status();
    auto plain = sample(nullptr, plain_eps);
    ASSERT_TRUE(plain.ok());
    ASSERT_EQ(plugin_eps.size(), direct_eps.size());
    ASSERT_GT(plugin_eps.size(), 0u);
    for (size_t i = 0; i < plugin_eps.size(); ++i) {
      EXPECT_TRUE(testing::AllClose(plugin_eps[i], direct_eps[i], 1e-6, 1e-6, "eps of call " + std::to_string(i)));
    }
    EXPECT_TRUE(testing::AllClose(via_plugin->latent, via_engine->latent, 1e-6, 1e-6, "final latent"));
    EXPECT_FALSE(at::allclose(via_plugin->latent, plain->latent, 1e-4, 1e-4)) << "the unit must change the result";
    // The unit's infotext line and its detected map (an artifact) came through the host.
    bool infotext = false;
    std::vector<std::pair<std::string, std::string>> extra;
    (*hooks)->InfotextAdditions(0, extra);
    for (const auto& [k, v] : extra) infotext |= k == "ControlNet 0" && v.rfind("Module: canny, Model: weights,", 0) == 0;
    EXPECT_TRUE(infotext);
  }
}

}  // namespace
}  // namespace atelier
