// Infotext as WebUI writes it: the examples of webui-compat.md section 2.5 byte for byte, Python float formatting,
// quoting only values with ',', ':' or newlines, omission rules (empty negative prompt, Clip skip 1, ENSD for
// samplers without step noise, GPU RNG).
#include <gtest/gtest.h>

#include "engine/pipeline/infotext.h"

namespace atelier {
namespace {

using engine::InfotextFields;

TEST(InfotextTest, PythonFloatFormatting) {
  EXPECT_EQ(engine::PythonFloat(8), "8.0");
  EXPECT_EQ(engine::PythonFloat(7.5), "7.5");
  EXPECT_EQ(engine::PythonFloat(0.3), "0.3");
  EXPECT_EQ(engine::PythonFloat(0.6), "0.6");
  EXPECT_EQ(engine::PythonFloat(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(engine::PythonFloat(1e-05), "1e-05");
  EXPECT_EQ(engine::PythonFloat(1e16), "1e+16");
  EXPECT_EQ(engine::PythonFloat(1e15), "1000000000000000.0");
  EXPECT_EQ(engine::PythonFloat(-3), "-3.0");
  EXPECT_EQ(engine::PythonFloat(0.0001), "0.0001");
}

TEST(InfotextTest, QuotesOnlyValuesWithSeparators) {
  EXPECT_EQ(engine::QuoteInfotextValue("Latent"), "Latent");
  EXPECT_EQ(engine::QuoteInfotextValue("a, b"), "\"a, b\"");
  EXPECT_EQ(engine::QuoteInfotextValue("\"quoted\""), "\"\\\"quoted\\\"\"");  // would read back unquoted
  EXPECT_EQ(engine::QuoteInfotextValue("model: x \"y\""), "\"model: x \\\"y\\\"\"");
  EXPECT_EQ(engine::QuoteInfotextValue("line\nbreak"), "\"line\\nbreak\"");
  EXPECT_EQ(engine::QuoteInfotextValue("ü: é"), "\"ü: é\"");  // ensure_ascii=False
}

TEST(InfotextTest, EulerAWithVariationSeedEnsdAndCpuRngAsTheDocExample) {
  InfotextFields f;
  f.prompt = "1girl, cherry blossoms";
  f.steps = 20;
  f.sampler = "Euler a";
  f.schedule_type = "Automatic";
  f.cfg_scale = 7;
  f.seed = 1234;
  f.width = 512;
  f.height = 768;
  f.model_hash = "0a1b2c3d4e";
  f.model = "UnlimitedDiffusionWorks";
  f.subseed = 5678;
  f.subseed_strength = 0.3;
  f.clip_skip = 2;
  f.eta_noise_seed_delta = 31337;
  f.sampler_uses_ensd = true;
  f.eta = 1.0;
  f.rng = "CPU";
  f.version = "v1.10.1";
  // The doc's example prints the UI's int CFG scale "7"; an API float prints "7.0".
  EXPECT_EQ(engine::CreateInfotext(f),
            "1girl, cherry blossoms\n"
            "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1234, Size: 512x768, "
            "Model hash: 0a1b2c3d4e, Model: UnlimitedDiffusionWorks, Variation seed: 5678, Variation seed strength: "
            "0.3, Clip skip: 2, ENSD: 31337, RNG: CPU, Version: v1.10.1");
}

TEST(InfotextTest, OmissionRulesAndExtensionKeys) {
  InfotextFields f;
  f.prompt = "a red circle";
  f.steps = 6;
  f.sampler = "DPM++ 2M";
  f.schedule_type = "Karras";
  f.seed = 42;
  f.width = f.height = 128;
  f.eta_noise_seed_delta = 31337;  // DPM++ 2M draws no step noise: no ENSD
  f.extra = {{"ControlNet 0", "Module: canny, Weight: 1.0"}, {"Schedule type", "Karras"}};
  EXPECT_EQ(engine::CreateInfotext(f),
            "a red circle\nSteps: 6, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 42, Size: "
            "128x128, ControlNet 0: \"Module: canny, Weight: 1.0\"");

  f.negative_prompt = "lowres\nbad hands";
  f.img2img = true;
  f.denoising_strength = 0.6;
  f.extra = {{"Eta", "0.5"}};
  EXPECT_EQ(engine::CreateInfotext(f),
            "a red circle\nNegative prompt: lowres\nbad hands\nSteps: 6, Sampler: DPM++ 2M, Schedule type: Karras, "
            "CFG scale: 7.0, Seed: 42, Size: 128x128, Denoising strength: 0.6, Eta: 0.5");
}

}  // namespace
}  // namespace atelier
