// The WebUI folder layout, safe name resolution, and the host's tensor-file services plugins use to read it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>

#include "atelier/sdk/tensor.h"
#include "engine/io/model_folders.h"
#include "engine/io/safetensors.h"
#include "engine/io/tensor_view.h"
#include "host/host_services.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TempDir;

void Touch(const fs::path& p, const std::string& content = "x") {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << content;
}

TEST(ModelFoldersTest, WebUiInstallRootAndModelsFolderBothWork) {
  TempDir root;
  Touch(root.path() / "models/Stable-diffusion/anime/foo.safetensors", "12345");
  Touch(root.path() / "models/Stable-diffusion/bar.ckpt");
  Touch(root.path() / "models/Stable-diffusion/notes.txt");
  Touch(root.path() / "models/VAE/vae-ft-mse-840000-ema-pruned.safetensors");
  Touch(root.path() / "embeddings/easynegative.pt");

  for (const fs::path& dir : {root.path(), root.path() / "models"}) {
    SCOPED_TRACE(dir.string());
    auto folders = engine::ModelFolders::Open(dir);
    ASSERT_TRUE(folders.ok()) << folders.status();
    auto checkpoints = folders->List(engine::ModelFolder::kCheckpoint);
    ASSERT_EQ(checkpoints.size(), 2u);
    EXPECT_EQ(checkpoints[0].filename, "anime/foo.safetensors");
    EXPECT_EQ(checkpoints[0].name, "anime/foo");
    EXPECT_EQ(checkpoints[0].format, "safetensors");
    EXPECT_EQ(checkpoints[0].size_bytes, 5);
    EXPECT_EQ(checkpoints[1].filename, "bar.ckpt");
    EXPECT_EQ(folders->List(engine::ModelFolder::kVae).size(), 1u);
    auto embeddings = folders->List(engine::ModelFolder::kEmbedding);
    ASSERT_EQ(embeddings.size(), 1u);
    EXPECT_EQ(embeddings[0].name, "easynegative");
    EXPECT_TRUE(folders->List(engine::ModelFolder::kControlNet).empty());
  }
}

TEST(ModelFoldersTest, ListingFollowsSymlinksOnlyInsideTheTree) {
  TempDir root;
  const fs::path sd = root.path() / "models/Stable-diffusion";
  Touch(sd / "real/a.safetensors");
  Touch(root.path() / "outside/secret.safetensors");
  fs::create_directory_symlink(sd / "real", sd / "alias");               // inside: followed
  fs::create_directory_symlink(root.path() / "outside", sd / "escape");  // outside: skipped
  fs::create_symlink(root.path() / "outside/secret.safetensors", sd / "linked.safetensors");  // outside: skipped
  fs::create_directory_symlink(sd, sd / "real/loop");                     // a cycle: visited once
  auto folders = engine::ModelFolders::Open(root.path());
  ASSERT_TRUE(folders.ok());
  std::vector<std::string> names;
  for (const auto& f : folders->List(engine::ModelFolder::kCheckpoint)) names.push_back(f.filename);
  // Once, through the real folder or its alias (directory order decides which).
  ASSERT_EQ(names.size(), 1u);
  EXPECT_TRUE(names[0] == "real/a.safetensors" || names[0] == "alias/a.safetensors") << names[0];
}

TEST(ModelFoldersTest, ResolveRefusesEscapes) {
  TempDir root;
  Touch(root.path() / "models/ControlNet/canny.safetensors");
  Touch(root.path() / "secret.safetensors");
  fs::create_symlink(root.path() / "secret.safetensors", root.path() / "models/ControlNet/link.safetensors");
  auto folders = engine::ModelFolders::Open(root.path());
  ASSERT_TRUE(folders.ok());
  const auto kind = engine::ModelFolder::kControlNet;
  EXPECT_TRUE(folders->Resolve(kind, "canny.safetensors").ok());
  EXPECT_EQ(folders->Resolve(kind, "../../secret.safetensors").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(folders->Resolve(kind, (root.path() / "secret.safetensors").string()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(folders->Resolve(kind, "link.safetensors").status().message()),
              HasSubstr("resolves outside the ControlNet folder"));
  EXPECT_EQ(folders->Resolve(kind, "missing.safetensors").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(folders->Resolve(kind, "").status().code(), absl::StatusCode::kInvalidArgument);
  // A NUL byte would cut the name short for the C library: never a different file.
  EXPECT_FALSE(folders->Resolve(kind, std::string("canny.safetensors\0../../secret", 32)).ok());
  const auto long_name = folders->Resolve(kind, std::string(5000, 'a') + ".safetensors");
  EXPECT_FALSE(long_name.ok());
  EXPECT_LT(long_name.status().message().size(), 400u);  // the name is quoted short, not echoed whole
  EXPECT_FALSE(folders->Resolve(kind, "sub/../../../secret.safetensors").ok());
}

// The daemon's shipped models extend the user's folders: listed last and marked, resolved after the user's files
// (a user's file of the same name wins), never for checkpoints or embeddings, and escapes stay refused there too.
TEST(ModelFoldersTest, ShippedModelsAreAFallbackTheUsersFoldersExtend) {
  TempDir user, assets;
  Touch(user.path() / "models/ControlNet/canny.safetensors", "users");
  Touch(assets.path() / "models/ControlNet/canny.safetensors", "shipped canny");
  Touch(assets.path() / "models/ControlNet/seg.safetensors", "shipped seg");
  Touch(assets.path() / "models/RIFE/flownet.safetensors");
  Touch(assets.path() / "models/Stable-diffusion/tiny.safetensors");
  Touch(assets.path() / "secret.safetensors");
  fs::create_symlink(assets.path() / "secret.safetensors", assets.path() / "models/RIFE/link.safetensors");
  auto folders = engine::ModelFolders::Open(user.path());
  ASSERT_TRUE(folders.ok());
  EXPECT_TRUE(folders->List(engine::ModelFolder::kRife).empty());
  folders->AddShippedFolders(assets.path() / "models");

  const auto controlnets = folders->List(engine::ModelFolder::kControlNet);
  ASSERT_EQ(controlnets.size(), 2u);
  EXPECT_EQ(controlnets[0].filename, "canny.safetensors");
  EXPECT_FALSE(controlnets[0].shipped);  // the user's file wins the name
  EXPECT_EQ(controlnets[0].size_bytes, 5);
  EXPECT_EQ(controlnets[1].filename, "seg.safetensors");
  EXPECT_TRUE(controlnets[1].shipped);
  auto canny = folders->Resolve(engine::ModelFolder::kControlNet, "canny.safetensors");
  ASSERT_TRUE(canny.ok());
  EXPECT_EQ(*canny, fs::canonical(user.path() / "models/ControlNet/canny.safetensors"));
  auto seg = folders->Resolve(engine::ModelFolder::kControlNet, "seg.safetensors");
  ASSERT_TRUE(seg.ok());
  EXPECT_EQ(*seg, fs::canonical(assets.path() / "models/ControlNet/seg.safetensors"));

  const auto rife = folders->List(engine::ModelFolder::kRife);
  ASSERT_EQ(rife.size(), 1u);  // the symlink out of the shipped folder is not listed
  EXPECT_TRUE(rife[0].shipped);
  EXPECT_EQ(folders->Resolve(engine::ModelFolder::kRife, "link.safetensors").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(folders->List(engine::ModelFolder::kCheckpoint).empty());  // checkpoints stay the user's

  // The user's models folder being the shipped one adds nothing twice.
  auto same = engine::ModelFolders::Open(assets.path() / "models");
  ASSERT_TRUE(same.ok());
  same->AddShippedFolders(assets.path() / "models");
  EXPECT_EQ(same->FolderPaths(engine::ModelFolder::kControlNet).size(), 1u);
  EXPECT_FALSE(same->List(engine::ModelFolder::kControlNet)[0].shipped);
}

TEST(ModelFoldersTest, MissingRootIsNotFound) {
  EXPECT_EQ(engine::ModelFolders::Open("/nonexistent/models").status().code(), absl::StatusCode::kNotFound);
}

// The tensor_file_* host functions, called through the table a plugin receives, on a real fixture checkpoint.
TEST(HostTensorFileTest, PluginsReadCheckpointsFromTheModelFolders) {
  const fs::path fixture = testing::FixturesDir() / "controlnet-tiny" / "weights.safetensors";
  ASSERT_TRUE(fs::exists(fixture)) << fixture;
  TempDir root;
  fs::create_directories(root.path() / "models/ControlNet");
  fs::copy_file(fixture, root.path() / "models/ControlNet/control_tiny.safetensors");
  auto folders = engine::ModelFolders::Open(root.path());
  ASSERT_TRUE(folders.ok());
  host::HostEnvironment environment{"test", "cpu", &*folders};
  host::PluginHostContext context{"reader", &environment};
  const atelier_host_api api = host::MakeHostApi(&context);

  auto reference = engine::SafetensorsFile::Open(fixture);
  ASSERT_TRUE(reference.ok());

  atelier_error err{};
  atelier_tensor_file* file = nullptr;
  ASSERT_EQ(api.tensor_file_open(&api, ATELIER_FOLDER_CONTROLNET, "control_tiny.safetensors", &file, &err), ATELIER_OK)
      << err.message;
  ASSERT_EQ(api.tensor_file_count(file), static_cast<int64_t>((*reference)->tensors().size()));

  const char* name = nullptr;
  DLManagedTensor* first = nullptr;
  ASSERT_EQ(api.tensor_file_get(file, 0, &name, &first, &err), ATELIER_OK) << err.message;
  EXPECT_EQ(std::string(name), (*reference)->tensors()[0].name);
  DLManagedTensor* by_name = nullptr;
  ASSERT_EQ(api.tensor_file_find(file, name, &by_name, &err), ATELIER_OK);
  EXPECT_EQ(api.tensor_file_find(file, "no.such.tensor", &by_name, &err), ATELIER_NOT_FOUND);
  EXPECT_THAT(std::string(err.message), HasSubstr("no tensor 'no.such.tensor'"));
  EXPECT_EQ(api.tensor_file_get(file, 1 << 30, &name, &by_name, &err), ATELIER_INVALID_ARGUMENT);
  api.tensor_file_close(file);

  // Tensors outlive the handle; values equal an independent read of the fixture.
  at::Tensor got = sdk::Adopt(first);
  at::Tensor want = engine::TensorView(*reference, (*reference)->tensors()[0]);
  EXPECT_TRUE(got.equal(want));

  EXPECT_EQ(api.tensor_file_open(&api, ATELIER_FOLDER_CONTROLNET, "../ControlNet/../../x", &file, &err),
            ATELIER_INVALID_ARGUMENT);
  EXPECT_EQ(api.tensor_file_open(&api, ATELIER_FOLDER_VAE, "control_tiny.safetensors", &file, &err), ATELIER_NOT_FOUND);
  EXPECT_EQ(api.tensor_file_open(&api, 99, "x", &file, &err), ATELIER_INVALID_ARGUMENT);
  EXPECT_EQ(file, nullptr);
}

}  // namespace
}  // namespace atelier
