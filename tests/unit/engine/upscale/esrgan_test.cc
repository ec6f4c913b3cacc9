// The ESRGAN-family upscalers against goldens made with PyTorch and Pillow from the published definitions
// (scripts/gen/esrgan_goldens.py): RRDBNet in its three key layouts and x2 (pixel-unshuffle) form,
// SRVGGNetCompact, WebUI's tiled upscale (split_grid / combine_grid with PIL's masked paste), PIL's Lanczos, the
// upscale loop's sizes, and bad files refused by name.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "engine/io/tensor_file.h"
#include "engine/upscale/esrgan_net.h"
#include "engine/upscale/image_upscaler.h"
#include "engine/upscale/pil_resize.h"
#include "engine/upscale/upscaler_catalog.h"
#include "test_support.h"

namespace atelier {
namespace {

using ::testing::HasSubstr;

const std::string kDir = std::string(ATELIER_SOURCE_DIR) + "/tests/data/esrgan/";

std::map<std::string, at::Tensor> Read(const std::string& file) {
  auto set = engine::ReadTensorSet(kDir + file);
  EXPECT_TRUE(set.ok()) << set.status();
  if (!set.ok()) return {};
  std::map<std::string, at::Tensor> out;
  for (const auto& [k, v] : set->tensors) out[k] = v.clone();
  return out;
}

std::unique_ptr<engine::EsrganNet> Load(const std::string& file) {
  auto net = engine::EsrganNet::FromTensors(Read(file), file);
  EXPECT_TRUE(net.ok()) << net.status();
  return net.ok() ? *std::move(net) : nullptr;
}

TEST(EsrganTest, EveryLayoutMatchesThePublishedArchitecture) {
  const auto golden = Read("golden.safetensors");
  const at::Tensor x = golden.at("input");
  for (const auto& [file, output, scale] :
       std::vector<std::tuple<std::string, std::string, int>>{{"rrdb_x4.safetensors", "output_rrdb_x4", 4},
                                                              {"rrdb_x4_old.safetensors", "output_rrdb_x4", 4},
                                                              {"rrdb_x4_bsrgan.safetensors", "output_rrdb_x4", 4},
                                                              {"rrdb_x2.safetensors", "output_rrdb_x2", 2},
                                                              {"compact_x4.safetensors", "output_compact_x4", 4}}) {
    auto net = Load(file);
    ASSERT_NE(net, nullptr);
    EXPECT_EQ(net->scale(), scale) << file;
    const at::Tensor y = net->Forward(x);
    ASSERT_EQ(y.sizes(), golden.at(output).sizes()) << file;
    EXPECT_LT((y - golden.at(output)).abs().max().item<double>(), 1e-5) << file;
  }
  EXPECT_THAT(Load("rrdb_x4_old.safetensors")->description(), HasSubstr("RRDBNet, 2 blocks, 8 features"));
  EXPECT_THAT(Load("compact_x4.safetensors")->description(), HasSubstr("SRVGGNet, 2 convs"));
}

TEST(EsrganTest, TiledUpscaleIsWebUisSplitAndCombine) {
  const auto golden = Read("golden.safetensors");
  auto net = Load("rrdb_x4.safetensors");
  ASSERT_NE(net, nullptr);
  const at::Tensor image = golden.at("tile_input");
  auto untiled = engine::RunNetOnImage(*net, image, at::kCPU);
  ASSERT_TRUE(untiled.ok()) << untiled.status();
  EXPECT_LE((untiled->to(at::kInt) - golden.at("untiled_output").to(at::kInt)).abs().max().item<int>(), 1);
  std::shared_ptr<const engine::EsrganNet> shared = std::move(net);
  const engine::ModelUpscaler upscaler("test", shared, at::kCPU, engine::TileOptions{16, 4});
  auto tiled = upscaler.Pass(image, 4.0, nullptr);
  ASSERT_TRUE(tiled.ok()) << tiled.status();
  const at::Tensor diff = (tiled->to(at::kInt) - golden.at("tile_output").to(at::kInt)).abs();
  EXPECT_LE(diff.max().item<int>(), 1);
  EXPECT_LT(diff.gt(0).sum().item<int64_t>(), 10);  // float rounding at .5 boundaries only
  EXPECT_GT((*tiled != *untiled).sum().item<int64_t>(), 100);  // the tiles' seams are really there

  // A pointwise "model": tiles blend over identical pixels, so the tiled result is the untiled one exactly.
  const auto nearest = [](const at::Tensor& t) -> absl::StatusOr<at::Tensor> {
    return t.repeat_interleave(2, 0).repeat_interleave(2, 1).contiguous();
  };
  auto pointwise = engine::UpscaleTiled(image, engine::TileOptions{16, 4}, nearest, nullptr);
  ASSERT_TRUE(pointwise.ok());
  EXPECT_TRUE(at::equal(*pointwise, *nearest(image)));
  // Stopping between tiles.
  auto stopped = engine::UpscaleTiled(image, engine::TileOptions{16, 4}, nearest, [] { return true; });
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled);
}

TEST(EsrganTest, LanczosIsPillowsExactly) {
  const auto golden = Read("golden.safetensors");
  for (const auto& [w, h] : std::vector<std::pair<int, int>>{{16, 11}, {90, 70}, {37, 40}}) {
    auto out = engine::PilResizeLanczos(golden.at("tile_input"), w, h);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(at::equal(*out, golden.at(absl::StrCat("lanczos_", w, "x", h)))) << w << "x" << h;
  }
  EXPECT_FALSE(engine::PilResizeLanczos(at::zeros({4, 4, 3}, at::kFloat), 2, 2).ok());
}

// A 4x "model" counting its passes.
class CountingUpscaler final : public engine::ImageUpscaler {
 public:
  const std::string& name() const override { return name_; }
  absl::StatusOr<at::Tensor> Pass(const at::Tensor& rgb, double, const engine::UpscaleStop&) const override {
    ++passes;
    return rgb.repeat_interleave(4, 0).repeat_interleave(4, 1).contiguous();
  }
  mutable int passes = 0;

 private:
  std::string name_ = "counting";
};

TEST(EsrganTest, UpscaleLoopEndsAtFloor8OfTheScale) {
  const at::Tensor image = at::randint(0, 255, {29, 37, 3}, at::kByte);
  CountingUpscaler up;
  auto x2 = engine::UpscaleBy(up, image, 2.0, 4096, nullptr);
  ASSERT_TRUE(x2.ok());
  EXPECT_EQ(x2->sizes(), (std::vector<int64_t>{56, 72, 3}));  // floor8(58) x floor8(74)
  EXPECT_EQ(up.passes, 1);
  up.passes = 0;
  auto x8 = engine::UpscaleBy(up, image, 8.0, 4096, nullptr);
  ASSERT_TRUE(x8.ok());
  EXPECT_EQ(x8->sizes(), (std::vector<int64_t>{232, 296, 3}));
  EXPECT_EQ(up.passes, 2);
  up.passes = 0;
  auto x1 = engine::UpscaleBy(up, image, 1.0, 4096, nullptr);  // a scale of 1 still runs the model once
  ASSERT_TRUE(x1.ok());
  EXPECT_EQ(up.passes, 1);
  EXPECT_EQ(x1->sizes(), (std::vector<int64_t>{24, 32, 3}));
  for (double bad : {0.0, -1.0, std::nan(""), 1e9}) {
    EXPECT_EQ(engine::UpscaleBy(up, image, bad, 4096, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  }
  // resize_image: no upscaler below the image's size, Lanczos to the exact target.
  up.passes = 0;
  auto smaller = engine::ResizeWithUpscaler(&up, image, 20, 15, 4096, nullptr);
  ASSERT_TRUE(smaller.ok());
  EXPECT_EQ(up.passes, 0);
  auto exact = engine::ResizeWithUpscaler(&up, image, 75, 59, 4096, nullptr);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->sizes(), (std::vector<int64_t>{59, 75, 3}));
  EXPECT_EQ(up.passes, 1);
}

TEST(EsrganTest, BadFilesAreRefusedByName) {
  auto other = engine::EsrganNet::FromTensors({{"foo.weight", at::zeros({2, 2})}}, "foo.pth");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(other.status().message()), HasSubstr("not an ESRGAN-family upscaler"));
  auto tensors = Read("rrdb_x4_old.safetensors");
  tensors.erase("model.1.sub.1.RDB2.conv3.0.weight");
  auto missing = engine::EsrganNet::FromTensors(tensors, "cut.pth");
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("model.1.sub.1.RDB2.conv3.0.weight"));
  tensors = Read("rrdb_x4_old.safetensors");
  tensors["model.8.weight"] = at::zeros({8, 8, 1, 1});
  auto shape = engine::EsrganNet::FromTensors(tensors, "shape.pth");
  EXPECT_THAT(std::string(shape.status().message()), HasSubstr("model.8.weight is [8, 8, 1, 1]"));
}

TEST(EsrganTest, CatalogNamesAsWebUi) {
  testing::TempDir root;
  std::filesystem::create_directories(root.path() / "ESRGAN");
  std::filesystem::create_directories(root.path() / "RealESRGAN");
  std::filesystem::copy_file(kDir + "rrdb_x4_old.safetensors", root.path() / "ESRGAN" / "4x-Tiny.safetensors");
  std::filesystem::copy_file(kDir + "rrdb_x4.safetensors",
                             root.path() / "RealESRGAN" / "RealESRGAN_x4plus_anime_6B.safetensors");
  auto folders = engine::ModelFolders::Open(root.path());
  ASSERT_TRUE(folders.ok());
  engine::UpscalerCatalog catalog(&*folders);
  std::vector<std::string> names;
  for (const auto& e : catalog.List()) names.push_back(e.name);
  EXPECT_THAT(names, ::testing::ElementsAre("None", "Lanczos", "Nearest", "4x-Tiny", "R-ESRGAN 2x+", "R-ESRGAN 4x+",
                                            "R-ESRGAN 4x+ Anime6B", "R-ESRGAN AnimeVideo", "R-ESRGAN General 4xV3",
                                            "R-ESRGAN General WDN 4xV3", "RealESRGAN_x4plus_anime_6B"));
  auto anime = catalog.Find("R-ESRGAN 4x+ Anime6B");
  ASSERT_TRUE(anime.ok()) << anime.status();
  EXPECT_EQ(anime->path.filename(), "RealESRGAN_x4plus_anime_6B.safetensors");
  auto absent = catalog.Find("R-ESRGAN 4x+");
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(absent.status().message()), HasSubstr("RealESRGAN_x4plus.pth"));
  auto unknown = catalog.Find("SwinIR 4x");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("4x-Tiny"));
}

}  // namespace
}  // namespace atelier
