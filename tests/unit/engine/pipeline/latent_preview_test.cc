// Latent previews: WebUI's "Approx cheap" and ComfyUI's latent2rgb reproduce the latent-preview goldens (floats and
// each reference's uint8 quantisation); the full-VAE preview equals WebUI's decode of the same latent; method names
// of WebUI, ComfyUI and Atelier parse, anything else is an error naming the choices.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "engine/pipeline/latent_preview.h"
#include "engine/models/vae.h"
#include "fixture_case.h"
#include "model_configs.h"
#include "test_support.h"

namespace atelier {
namespace {

using engine::PreviewMethod;
using testing::AllClose;

TEST(LatentPreviewTest, MatrixMethodsMatchGoldens) {
  for (const auto& c : testing::CasesOf("latent-preview")) {
    SCOPED_TRACE(c.dir.string());
    const at::Tensor latent = c.io.at("latent");
    const at::Tensor cheap = engine::CheapApproximation(latent);
    EXPECT_TRUE(AllClose(cheap, c.io.at("webui_cheap"), c.atol, c.rtol, "webui_cheap"));
    const at::Tensor comfy = engine::ComfyLatentToRgb(latent);
    EXPECT_TRUE(AllClose(comfy[0], c.io.at("comfy_latent2rgb"), c.atol, c.rtol, "comfy_latent2rgb"));

    engine::LatentPreviewer previewer(nullptr, 0.18215, nullptr, absl::OkStatus());
    auto webui = previewer.Render(PreviewMethod::kApproxCheap, latent);
    ASSERT_TRUE(webui.ok()) << webui.status();
    const at::Tensor webui_scaled = (at::clamp(cheap * 0.5 + 0.5, 0, 1) * 255)[0].permute({1, 2, 0});
    EXPECT_TRUE(testing::Uint8Equal((*webui)[0], c.io.at("webui_cheap_uint8"), webui_scaled, false, 1e-3, "webui_cheap_uint8"));

    auto comfy_round = previewer.Render(PreviewMethod::kApproxComfy, latent);
    ASSERT_TRUE(comfy_round.ok()) << comfy_round.status();
    const at::Tensor round_scaled = ((at::clamp(comfy, -1, 1) + 1) * 127.5)[0];
    EXPECT_TRUE(testing::Uint8Equal((*comfy_round)[0], c.io.at("comfy_latent2rgb_uint8_round"), round_scaled, true, 1e-3,
                                    "comfy_latent2rgb_uint8_round"));
    const at::Tensor trunc_scaled = (at::clamp((comfy + 1) / 2, 0, 1) * 255)[0];
    EXPECT_TRUE(testing::Uint8Equal(engine::ComfyToUint8Truncate(comfy)[0], c.io.at("comfy_latent2rgb_uint8_trunc"),
                                    trunc_scaled, false, 1e-3, "comfy_latent2rgb_uint8_trunc"));
    // The two quantisations really differ somewhere (so the test tells them apart).
    EXPECT_FALSE(at::equal(c.io.at("comfy_latent2rgb_uint8_round"), c.io.at("comfy_latent2rgb_uint8_trunc")));
  }
}

TEST(LatentPreviewTest, FullVaePreviewIsWebUisDecode) {
  for (const auto& c : testing::CasesOf("vae-tiny")) {
    SCOPED_TRACE(c.dir.string());
    auto vae = engine::Vae::Create(testing::VaeConfigOf(c), testing::ReadWeights(c, "first_stage_model."));
    ASSERT_TRUE(vae.ok()) << vae.status();
    const double scale = c.json["config"]["scale_factor"];
    engine::LatentPreviewer previewer(vae->get(), scale, nullptr, absl::OkStatus());
    auto preview = previewer.Render(PreviewMethod::kFull, c.io.at("unet_latent"));
    ASSERT_TRUE(preview.ok()) << preview.status();
    const at::Tensor want = c.io.at("decoded_from_unet_latent");
    ASSERT_EQ(preview->sizes(), (std::vector<int64_t>{1, want.size(2), want.size(3), 3}));
    const at::Tensor scaled = (at::clamp(want * 0.5 + 0.5, 0, 1) * 255)[0].permute({1, 2, 0});
    EXPECT_TRUE(testing::Uint8Equal((*preview)[0], scaled.to(at::kByte), scaled, false, 0.01, "full VAE preview"));
  }
}

TEST(LatentPreviewTest, BadRequestsAreClearErrors) {
  engine::LatentPreviewer previewer(nullptr, 0.18215, nullptr, absl::OkStatus());
  EXPECT_EQ(previewer.Available(PreviewMethod::kFull).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(previewer.Available(PreviewMethod::kTaesd).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(previewer.Render(PreviewMethod::kNone, at::zeros({1, 4, 8, 8})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(previewer.Render(PreviewMethod::kApproxCheap, at::zeros({1, 3, 8, 8})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LatentPreviewTest, MethodNamesOfWebUiComfyUiAndAtelierParse) {
  const std::pair<const char*, PreviewMethod> names[] = {
      {"none", PreviewMethod::kNone},          {"Approx cheap", PreviewMethod::kApproxCheap},
      {"approx-cheap", PreviewMethod::kApproxCheap}, {"latent2rgb", PreviewMethod::kApproxComfy},
      {"auto", PreviewMethod::kApproxComfy},   {"approx-comfyui", PreviewMethod::kApproxComfy},
      {"TAESD", PreviewMethod::kTaesd},        {"taesd", PreviewMethod::kTaesd},
      {"Full", PreviewMethod::kFull}};
  for (const auto& [name, method] : names) {
    auto parsed = engine::ParsePreviewMethod(name);
    ASSERT_TRUE(parsed.ok()) << name << ": " << parsed.status();
    EXPECT_EQ(*parsed, method) << name;
    EXPECT_EQ(*engine::ParsePreviewMethod(engine::PreviewMethodName(method)), method);
  }
  const auto unknown = engine::ParsePreviewMethod("sharp");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("approx-cheap"), std::string::npos) << unknown.status();
  EXPECT_NE(unknown.status().message().find("taesd"), std::string::npos) << unknown.status();
  EXPECT_EQ(engine::ParsePreviewMethod("Approx NN").status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace atelier
