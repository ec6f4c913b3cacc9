// TAESD: the decoder reproduces the taesd goldens (raw decodes and WebUI's uint8 preview); the encoder follows the
// layout in the case notes (checked against a plain functional composition of the same weights); parameter names
// equal the released files'; files are found in models/VAE-approx with or without the part prefix, and a missing
// file is FAILED_PRECONDITION naming the folder.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>
#include <map>
#include <set>

#include "engine/pipeline/latent_preview.h"
#include "engine/io/safetensors_writer.h"
#include "engine/models/taesd.h"
#include "fixture_case.h"
#include "test_support.h"

namespace atelier {
namespace {

using testing::AllClose;

std::vector<std::pair<std::string, at::Tensor>> AsList(const std::map<std::string, at::Tensor>& m, const std::string& prefix) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [name, t] : m) out.emplace_back(prefix + name, t.contiguous());
  return out;
}

TEST(TaesdTest, ParameterNamesEqualTheReleasedDecoderFile) {
  for (const auto& c : testing::CasesOf("taesd")) {
    SCOPED_TRACE(c.dir.string());
    std::map<std::string, std::vector<int64_t>> want, got;
    for (const auto& [name, t] : testing::ReadWeights(c, "decoder.")) want[name] = t.sizes().vec();
    for (const auto& [name, shape] : engine::Taesd::ParameterShapes(engine::TaesdPart::kDecoder)) got[name] = shape;
    EXPECT_EQ(got, want);
    // Names from the case notes (the released file's keys): biasless convs at 7/12/17, Block convs at .0/.2/.4.
    for (const char* name :
         {"1.weight", "3.conv.0.weight", "3.conv.2.weight", "3.conv.4.weight", "7.weight", "19.bias"}) {
      EXPECT_EQ(got.count(name), 1u) << name;
    }
    EXPECT_EQ(got.count("7.bias"), 0u);
  }
}

TEST(TaesdTest, EncoderHasTheLayoutOfTheNotes) {
  std::map<std::string, std::vector<int64_t>> got;
  for (const auto& [name, shape] : engine::Taesd::ParameterShapes(engine::TaesdPart::kEncoder)) got[name] = shape;
  // 0 conv 3->64, 1 Block, 2/6/10 stride-2 convs without bias, 3-5/7-9/11-13 Blocks, 14 conv 64->4.
  EXPECT_EQ(got["0.weight"], (std::vector<int64_t>{64, 3, 3, 3}));
  EXPECT_EQ(got["14.weight"], (std::vector<int64_t>{4, 64, 3, 3}));
  for (int i : {2, 6, 10}) {
    EXPECT_EQ(got.count(std::to_string(i) + ".weight"), 1u);
    EXPECT_EQ(got.count(std::to_string(i) + ".bias"), 0u);
  }
  EXPECT_EQ(got.size(), 7u + 10u * 6u);  // convs 0 and 14 (weight, bias), 2/6/10 (weight); 10 Blocks of 3 convs
}

TEST(TaesdTest, DecoderMatchesGoldensAndWebUiPreview) {
  for (const auto& c : testing::CasesOf("taesd")) {
    SCOPED_TRACE(c.dir.string());
    const auto weights = testing::ReadWeights(c, "");  // with the "decoder." prefix, as in the fixture
    auto taesd = engine::Taesd::Create(&weights, nullptr);
    ASSERT_TRUE(taesd.ok()) << taesd.status();
    EXPECT_TRUE((*taesd)->has_decoder());
    EXPECT_FALSE((*taesd)->has_encoder());
    for (const std::string which : {"random", "smooth"}) {
      auto decoded = (*taesd)->Decode(c.io.at("latent_" + which));
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      EXPECT_TRUE(AllClose(*decoded, c.io.at("decoded_" + which), c.atol, c.rtol, "taesd decoded_" + which));
    }
    engine::LatentPreviewer previewer(nullptr, 0.18215, taesd->get(), absl::OkStatus());
    auto preview = previewer.Render(engine::PreviewMethod::kTaesd, c.io.at("latent_smooth"));
    ASSERT_TRUE(preview.ok()) << preview.status();
    const at::Tensor decoded = *(*taesd)->Decode(c.io.at("latent_smooth"));
    const at::Tensor scaled = (at::clamp((decoded * 2 - 1) * 0.5 + 0.5, 0, 1) * 255)[0].permute({1, 2, 0});
    EXPECT_TRUE(testing::Uint8Equal((*preview)[0], c.io.at("webui_preview_uint8_smooth"), scaled, false, 1e-3,
                                    "taesd webui_preview_uint8_smooth"));
    // The hidden set's encoder goldens run when present.
    if (c.io.count("encoded") && c.io.count("image_uint8")) {
      const auto enc = testing::ReadWeights(c, "encoder.");
      auto both = engine::Taesd::Create(nullptr, &enc);
      ASSERT_TRUE(both.ok()) << both.status();
      const at::Tensor image = c.io.at("image_uint8").permute({2, 0, 1}).unsqueeze(0).to(at::kFloat) / 255;
      auto encoded = (*both)->Encode(image);
      ASSERT_TRUE(encoded.ok()) << encoded.status();
      EXPECT_TRUE(AllClose(*encoded, c.io.at("encoded"), c.atol, c.rtol, "taesd encoded"));
    }
  }
}

// The encoder as the notes describe it, composed from functional ops (independent of the module code).
at::Tensor ReferenceEncoder(const std::map<std::string, at::Tensor>& w, at::Tensor x) {
  auto conv = [&](const at::Tensor& h, const std::string& name, int64_t stride) {
    const auto bias = w.find(name + ".bias");
    return at::conv2d(h, w.at(name + ".weight"), bias == w.end() ? at::Tensor() : bias->second, {stride, stride}, {1, 1});
  };
  auto block = [&](const at::Tensor& h, int i) {
    const std::string p = std::to_string(i) + ".conv.";
    at::Tensor y = at::relu(conv(h, p + "0", 1));
    y = at::relu(conv(y, p + "2", 1));
    return at::relu(conv(y, p + "4", 1) + h);
  };
  x = block(conv(x, "0", 1), 1);
  for (int base : {2, 6, 10}) {
    x = conv(x, std::to_string(base), 2);
    for (int i = 1; i <= 3; ++i) x = block(x, base + i);
  }
  return conv(x, "14", 1);
}

TEST(TaesdTest, EncoderComputesTheNotesLayout) {
  at::manual_seed(7);
  std::map<std::string, at::Tensor> w;
  for (const auto& [name, shape] : engine::Taesd::ParameterShapes(engine::TaesdPart::kEncoder)) {
    const int64_t fan_in = shape.size() > 1 ? shape[1] * shape[2] * shape[3] : 64;
    w[name] = at::randn(shape) / std::sqrt(static_cast<double>(fan_in));
  }
  auto taesd = engine::Taesd::Create(nullptr, &w);
  ASSERT_TRUE(taesd.ok()) << taesd.status();
  const at::Tensor image = at::rand({2, 3, 64, 48});
  auto encoded = (*taesd)->Encode(image);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(encoded->sizes(), (std::vector<int64_t>{2, 4, 8, 6}));
  EXPECT_TRUE(AllClose(*encoded, ReferenceEncoder(w, image), 1e-5, 1e-5, "taesd encoder vs functional"));
  EXPECT_EQ((*taesd)->Decode(at::zeros({1, 4, 8, 8})).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*taesd)->Encode(at::zeros({1, 3, 60, 64})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*taesd)->Encode(at::zeros({1, 4, 64, 64})).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TaesdTest, LoadsFromTheVaeApproxFolderWithOrWithoutPrefix) {
  for (const auto& c : testing::CasesOf("taesd")) {
    const auto bare = testing::ReadWeights(c, "decoder.", at::kHalf);
    testing::TempDir dir;
    // Missing: FAILED_PRECONDITION naming the folder and the file names, also through the previewer.
    auto none = engine::Taesd::LoadFromFolder(dir.path());
    ASSERT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(none.status().message().find(dir.path().string()), std::string::npos) << none.status();
    EXPECT_NE(none.status().message().find("taesd_decoder.pth"), std::string::npos) << none.status();
    engine::LatentPreviewer previewer(nullptr, 0.18215, nullptr, none.status());
    EXPECT_EQ(previewer.Available(engine::PreviewMethod::kTaesd), none.status());
    EXPECT_EQ(previewer.Render(engine::PreviewMethod::kTaesd, c.io.at("latent_smooth")).status(), none.status());
    EXPECT_TRUE(previewer.Available(engine::PreviewMethod::kApproxCheap).ok());

    // Released naming (no prefix), F16 in the file, converted to F32 at load.
    ASSERT_TRUE(engine::WriteSafetensors(dir.path() / "taesd_decoder.safetensors", AsList(bare, ""), {}).ok());
    auto loaded = engine::Taesd::LoadFromFolder(dir.path());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE((*loaded)->has_decoder());
    EXPECT_FALSE((*loaded)->has_encoder());
    auto decoded = (*loaded)->Decode(c.io.at("latent_random"));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_TRUE(AllClose(*decoded, c.io.at("decoded_random"), c.atol, c.rtol, "taesd from folder"));

    // WebUI's attribute prefix is accepted too; a missing tensor is named.
    auto broken = bare;
    broken.erase("7.weight");
    ASSERT_TRUE(engine::WriteSafetensors(dir.path() / "taesd_decoder.safetensors", AsList(broken, "decoder."), {}).ok());
    auto bad = engine::Taesd::LoadFromFolder(dir.path());
    ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find("7.weight"), std::string::npos) << bad.status();

    // A .pth is read through the pickle reader (here a pickle of another model: its names are reported).
    std::filesystem::remove(dir.path() / "taesd_decoder.safetensors");
    std::filesystem::copy_file(testing::FixturesDir() / "ckpt-formats" / "zip_state_dict.ckpt", dir.path() / "taesd_decoder.pth");
    auto other = engine::Taesd::LoadFromFolder(dir.path());
    ASSERT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument) << other.status();
    EXPECT_NE(other.status().message().find("missing"), std::string::npos) << other.status();
    EXPECT_NE(other.status().message().find("unexpected"), std::string::npos) << other.status();
  }
}

}  // namespace
}  // namespace atelier
