// Checkpoint configuration (yaml / metadata / defaults, checked against shapes), hashes against an independent
// sha256sum, safetensors round trips for every dtype, conversion, and the model manager on a WebUI-layout tree.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/models/checkpoint_convert.h"
#include "engine/models/checkpoint_loader.h"
#include "engine/io/file_hash.h"
#include "engine/models/model_manager.h"
#include "engine/io/safetensors.h"
#include "engine/io/safetensors_writer.h"
#include "engine/models/sd_config.h"
#include "engine/io/tensor_file.h"
#include "fixture_case.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::TempDir;

// The tiny-sd case: its checkpoint and the configuration it records. No case is a test failure naming the fixtures
// folder (and an empty case).
testing::FixtureCase TinySdCase() {
  auto cases = testing::CasesOf("tiny-sd");
  return cases.empty() ? testing::FixtureCase() : cases.front();
}
fs::path TinySd() {
  const testing::FixtureCase c = TinySdCase();
  return c.dir.empty() ? testing::FixturesDir() / "tiny-sd" / "weights.safetensors" : testing::WeightsFile(c);
}
fs::path TinyYaml() { return fs::path(ATELIER_SOURCE_DIR) / "tests" / "data" / "tiny-sd.yaml"; }

std::string Shell(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  std::array<char, 256> buffer;
  while (fgets(buffer.data(), buffer.size(), pipe) != nullptr) out += buffer.data();
  pclose(pipe);
  return out;
}

// ---- configuration ----

TEST(Sd1ConfigTest, YamlBesideTheCheckpointWins) {
  TempDir dir;
  fs::copy_file(TinySd(), dir.path() / "tiny.safetensors");
  fs::copy_file(TinyYaml(), dir.path() / "tiny.yaml");
  auto index = engine::ReadTensorIndex(dir.path() / "tiny.safetensors");
  ASSERT_TRUE(index.ok());
  auto layout = engine::DetectLayout(*index, "tiny");
  ASSERT_TRUE(layout.ok());
  auto config = engine::ResolveSd1Config(dir.path() / "tiny.safetensors", *index, *layout);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source, "yaml tiny.yaml");
  // The yaml describes the checkpoint as the tiny-sd case records it (config.unet, config.vae, config.scale_factor).
  const testing::FixtureCase c = TinySdCase();
  ASSERT_FALSE(c.dir.empty());
  const auto& unet = c.json["config"]["unet"];
  EXPECT_EQ(config->unet.model_channels, unet["model_channels"].get<int>());
  EXPECT_EQ(config->unet.channel_mult, unet["channel_mult"].get<std::vector<int>>());
  EXPECT_EQ(config->unet.num_heads, unet["num_heads"].get<int>());
  EXPECT_EQ(config->unet.context_dim, unet["context_dim"].get<int>());
  EXPECT_EQ(config->vae.ch, c.json["config"]["vae"]["ddconfig"]["ch"].get<int>());
  EXPECT_EQ(config->clip.hidden_size, 32);
  EXPECT_EQ(config->clip.num_hidden_layers, 3);
  EXPECT_EQ(config->clip.num_attention_heads, 4);
  EXPECT_DOUBLE_EQ(config->scale_factor, c.json["config"]["scale_factor"].get<double>());
}

TEST(Sd1ConfigTest, DefaultsThatDoNotFitTheShapesNameTheTensor) {
  TempDir dir;
  fs::copy_file(TinySd(), dir.path() / "tiny.safetensors");  // no yaml: SD1.x defaults + metadata
  auto index = engine::ReadTensorIndex(dir.path() / "tiny.safetensors");
  ASSERT_TRUE(index.ok());
  auto layout = engine::DetectLayout(*index, "tiny");
  ASSERT_TRUE(layout.ok());
  auto config = engine::ResolveSd1Config(dir.path() / "tiny.safetensors", *index, *layout);
  ASSERT_FALSE(config.ok());
  const testing::FixtureCase c = TinySdCase();
  ASSERT_FALSE(c.dir.empty());
  const auto& unet = c.json["config"]["unet"];
  const std::string file_shape = "[" + std::to_string(unet["model_channels"].get<int>()) + ", " +
                                 std::to_string(unet["in_channels"].get<int>()) + ", 3, 3]";
  EXPECT_THAT(std::string(config.status().message()),
              HasSubstr("unet model_channels 320, in_channels 4 (SD1.x defaults and __metadata__) implies "
                        "model.diffusion_model.input_blocks.0.0.weight of shape [320, 4, 3, 3], the file has " +
                        file_shape));
}

TEST(Sd1ConfigTest, WrongYamlValuesAreNamed) {
  TempDir dir;
  fs::copy_file(TinySd(), dir.path() / "tiny.safetensors");
  std::ifstream in(TinyYaml());
  std::string yaml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto index = engine::ReadTensorIndex(dir.path() / "tiny.safetensors");
  ASSERT_TRUE(index.ok());
  auto layout = engine::DetectLayout(*index, "tiny");
  ASSERT_TRUE(layout.ok());
  struct Case {
    std::string from, to, message;
  };
  const std::vector<Case> cases = {
      {"num_heads: 4", "num_heads: 5", "unet num_heads 5 does not divide the 32 channels of input block 1"},
      {"context_dim: 32", "context_dim: 768", "context_dim 768"},
      {"channel_mult: [1, 1, 1, 2]", "channel_mult: [1, 2, 4, 4]", "unet channel_mult [1, 2, 4, 4]"},
      {"num_attention_heads: 4", "num_attention_heads: 3", "clip num_attention_heads 3 does not divide hidden_size 32"},
      {"num_hidden_layers: 3", "num_hidden_layers: 2", "more than 2 layers"},
      {"ch: 32", "ch: 64", "vae ch 64"},
      {"model_channels: 32", "model_channels: abc", "unet_config.params.model_channels has an invalid value"},
      {"timesteps: 1000", "timesteps: 500", "schedule timesteps 500"},
      {"model:", "modelx:", "has no model.params"},
      {"model:", "model: [", "is not valid YAML"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.to);
    std::string edited = yaml;
    const auto at = edited.find(c.from);
    ASSERT_NE(at, std::string::npos);
    edited.replace(at, c.from.size(), c.to);
    std::ofstream(dir.path() / "tiny.yaml") << edited;
    auto config = engine::ResolveSd1Config(dir.path() / "tiny.safetensors", *index, *layout);
    ASSERT_FALSE(config.ok());
    EXPECT_THAT(std::string(config.status().message()), HasSubstr(c.message));
  }
}

TEST(Sd1ConfigTest, DefaultsFitTheReleasedSd15Layout) {
  const auto json = nlohmann::json::parse(std::ifstream(testing::FixturesDir().parent_path() / "manifests/sd15-ldm.json"));
  engine::TensorIndex index;
  for (const auto& [name, shape] : json["tensors"].items()) {
    index.tensors.push_back({name, engine::DType::kF32, shape.get<std::vector<std::int64_t>>()});
  }
  index.metadata["num_attention_heads"] = "12";
  index.Build();
  auto layout = engine::DetectLayout(index, "v1-5");
  ASSERT_TRUE(layout.ok());
  auto config = engine::ResolveSd1Config("/nonexistent/v1-5-pruned-emaonly.safetensors", index, *layout);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->unet.model_channels, 320);
  EXPECT_EQ(config->clip.num_attention_heads, 12);
  EXPECT_EQ(config->source, "SD1.x defaults and __metadata__");
  // The manifest's own config block agrees with the defaults.
  EXPECT_EQ(json["config"]["unet"]["num_heads"].get<int>(), config->unet.num_heads);
  EXPECT_EQ(json["config"]["clip"]["layers"].get<int>(), config->clip.num_hidden_layers);
  EXPECT_EQ(json["config"]["vae_ddconfig"]["ch"].get<int>(), config->vae.ch);
}

// A file may declare the size it was trained for (Stability's ModelSpec key); anything malformed is ignored.
TEST(Sd1ConfigTest, NativeSizeFromModelspecResolution) {
  const auto json = nlohmann::json::parse(std::ifstream(testing::FixturesDir().parent_path() / "manifests/sd15-ldm.json"));
  struct Case {
    const char* value;  // nullptr: no key
    int width, height;
  };
  for (const Case& c : {Case{nullptr, 0, 0}, Case{"64x64", 64, 64}, Case{"768X512", 768, 512},
                        Case{"64", 0, 0}, Case{"63x64", 0, 0}, Case{"0x0", 0, 0}, Case{"99999x64", 0, 0},
                        Case{"axb", 0, 0}}) {
    engine::TensorIndex index;
    for (const auto& [name, shape] : json["tensors"].items()) {
      index.tensors.push_back({name, engine::DType::kF32, shape.get<std::vector<std::int64_t>>()});
    }
    index.metadata["num_attention_heads"] = "12";
    if (c.value != nullptr) index.metadata["modelspec.resolution"] = c.value;
    index.Build();
    auto layout = engine::DetectLayout(index, "v1-5");
    ASSERT_TRUE(layout.ok());
    auto config = engine::ResolveSd1Config("/nonexistent/m.safetensors", index, *layout);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->native_width, c.width) << (c.value ? c.value : "none");
    EXPECT_EQ(config->native_height, c.height) << (c.value ? c.value : "none");
  }
}

TEST(Sd1ConfigTest, ScheduleMatchesTheCheckpointBuffer) {
  const testing::FixtureCase c = TinySdCase();
  ASSERT_FALSE(c.dir.empty());
  auto file = engine::ReadTensorSet(testing::WeightsFile(c));
  ASSERT_TRUE(file.ok());
  at::Tensor stored;
  for (const auto& [name, t] : file->tensors) {
    if (name == "alphas_cumprod") stored = t;
  }
  ASSERT_TRUE(stored.defined());
  // The schedule the case records (config.schedule: scaled linear 0.00085 .. 0.012 over 1000 steps).
  const auto& schedule = c.json["config"]["schedule"];
  engine::ScheduleConfig schedule_config;
  schedule_config.linear_start = schedule["linear_start"].get<double>();
  schedule_config.linear_end = schedule["linear_end"].get<double>();
  schedule_config.timesteps = schedule["timesteps"].get<int>();
  const at::Tensor computed = engine::ComputeAlphasCumprod(schedule_config);
  EXPECT_EQ(computed.scalar_type(), at::kFloat);
  EXPECT_TRUE(computed.equal(stored.to(at::kFloat)));  // float64 computation cast to float32, bit for bit
}

TEST(Sd1ConfigTest, AnimateDiffLinearScheduleMatchesTheExtensions) {
  for (const auto& c : testing::CasesOf("motion-module-tiny")) {
    const at::Tensor want = c.io.at("alphas_cumprod_animatediff");
    const at::Tensor got = engine::ComputeLinearBetaAlphasCumprod();
    EXPECT_EQ(got.scalar_type(), at::kFloat);
    EXPECT_TRUE(testing::AllClose(got, want, 1e-7, 1e-6, "alphas_cumprod_animatediff"));
    // It really differs from SD's scaled-linear schedule.
    EXPECT_GT((got - engine::ComputeAlphasCumprod(engine::ScheduleConfig())).abs().max().item<float>(), 1e-3);
  }
}

// ---- hashes ----

TEST(FileHashTest, MatchesSha256sumAndWebUiShortHash) {
  TempDir dir;
  const fs::path path = dir.path() / "file.bin";
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < (1 << 21) + 1234; ++i) out.put(static_cast<char>((i * 7919) & 0xFF));
  }
  auto full = engine::Sha256File(path);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(*full, Shell("sha256sum '" + path.string() + "' | cut -c1-64 | tr -d '\\n'"));
  auto short_hash = engine::ShortHash(path);
  ASSERT_TRUE(short_hash.ok());
  EXPECT_EQ(*short_hash,
            Shell("tail -c +1048577 '" + path.string() + "' | head -c 65536 | sha256sum | cut -c1-8 | tr -d '\\n'"));
  EXPECT_EQ(engine::ModelHash(*full), full->substr(0, 10));
  // A file shorter than 1 MiB hashes nothing for the short hash, as Python's seek + read does.
  std::ofstream(dir.path() / "small.bin") << "tiny";
  EXPECT_EQ(*engine::ShortHash(dir.path() / "small.bin"), Shell("printf '' | sha256sum | cut -c1-8 | tr -d '\\n'"));
}

TEST(FileHashTest, CacheRemembersAndNoticesChanges) {
  TempDir dir;
  const fs::path file = dir.path() / "model.safetensors";
  const fs::path cache = dir.path() / "cache" / "hashes.json";
  std::ofstream(file) << "version one";
  {
    engine::HashCache hashes(cache);
    EXPECT_EQ(hashes.Cached(file), "");
    auto hash = hashes.Sha256(file);
    ASSERT_TRUE(hash.ok());
    EXPECT_EQ(hashes.Cached(file), *hash);
  }
  ASSERT_TRUE(fs::exists(cache));
  engine::HashCache reloaded(cache);
  EXPECT_EQ(reloaded.Cached(file), *engine::Sha256File(file));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::ofstream(file) << "version two, longer";
  EXPECT_EQ(reloaded.Cached(file), "");  // size/mtime changed
  EXPECT_EQ(*reloaded.Sha256(file), *engine::Sha256File(file));
  std::ofstream(cache) << "{ not json";
  engine::HashCache corrupt(cache);  // ignored, not fatal
  EXPECT_EQ(corrupt.Cached(file), "");
}

// ---- writing and converting ----

TEST(SafetensorsWriterTest, RoundTripsEveryDtype) {
  TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f64", at::randn({3, 2}, at::kDouble)},
      {"f32", at::randn({4, 5})},
      {"f16", at::randn({7}).to(at::kHalf)},
      {"bf16", at::randn({2, 3}).to(at::kBFloat16)},
      {"i64", at::randint(-1000, 1000, {5}, at::kLong)},
      {"i32", at::randint(-1000, 1000, {2, 2}, at::kInt)},
      {"i16", at::randint(-1000, 1000, {3}, at::kShort)},
      {"i8", at::randint(-100, 100, {3}, at::kChar)},
      {"u8", at::randint(0, 255, {4}, at::kByte)},
      {"bool", at::randint(0, 2, {5}, at::kLong).to(at::kBool)},
      {"scalar", at::tensor(3.5f)},
      {"empty", at::empty({0, 4})},
      {"strided", at::randn({4, 6}).t()},
  };
  const fs::path path = dir.path() / "all.safetensors";
  ASSERT_TRUE(engine::WriteSafetensors(path, tensors, {{"format", "pt"}, {"note", "round trip"}}).ok());
  EXPECT_FALSE(fs::exists(path.string() + ".partial"));
  auto file = engine::SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("note"), "round trip");
  auto set = engine::ReadTensorSet(path);
  ASSERT_TRUE(set.ok());
  ASSERT_EQ(set->tensors.size(), tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    SCOPED_TRACE(tensors[i].first);
    EXPECT_EQ(set->tensors[i].first, tensors[i].first);
    EXPECT_EQ(set->tensors[i].second.scalar_type(), tensors[i].second.scalar_type());
    EXPECT_TRUE(set->tensors[i].second.equal(tensors[i].second));
  }
  std::ifstream raw(path, std::ios::binary);
  std::uint64_t header_length = 0;
  raw.read(reinterpret_cast<char*>(&header_length), 8);
  EXPECT_EQ(header_length % 8, 0u);  // data starts 8-byte aligned
  EXPECT_FALSE(engine::WriteSafetensors(dir.path() / "dup.safetensors", {tensors[0], tensors[0]}, {}).ok());
}

TEST(ConvertTest, PickleToSafetensorsKeepsValuesAndRecordsTheSource) {
  const fs::path cases = testing::FixturesDir() / "ckpt-formats";
  auto expected = engine::ReadTensorSet(cases / "io.safetensors");
  ASSERT_TRUE(expected.ok());
  TempDir dir;
  for (const bool fp16 : {false, true}) {
    SCOPED_TRACE(fp16 ? "fp16" : "as stored");
    const fs::path out = dir.path() / (fp16 ? "half.safetensors" : "full.safetensors");
    auto report = engine::ConvertToSafetensors(cases / "zip_wrapped.ckpt", out, {fp16});
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->source_format, "zip pickle");
    EXPECT_EQ(report->tensors, static_cast<std::int64_t>(expected->tensors.size()));
    auto converted = engine::ReadTensorSet(out);
    ASSERT_TRUE(converted.ok());
    EXPECT_EQ(converted->metadata.at("atelier.source_sha256"), *engine::Sha256File(cases / "zip_wrapped.ckpt"));
    std::map<std::string, at::Tensor> got(converted->tensors.begin(), converted->tensors.end());
    for (const auto& [name, want] : expected->tensors) {
      ASSERT_EQ(got.count(name), 1u) << name;
      if (fp16 && want.scalar_type() == at::kFloat) {
        EXPECT_EQ(got[name].scalar_type(), at::kHalf) << name;
        EXPECT_TRUE(got[name].equal(want.to(at::kHalf))) << name;
      } else {
        EXPECT_EQ(got[name].scalar_type(), want.scalar_type()) << name;
        EXPECT_TRUE(got[name].equal(want)) << name;
      }
    }
  }
  EXPECT_FALSE(engine::ConvertToSafetensors(cases / "evil.ckpt", dir.path() / "evil.safetensors", {}).ok());
  EXPECT_FALSE(fs::exists(dir.path() / "evil.safetensors"));
}

// ---- the model manager on a WebUI tree ----

class ModelManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path sd = root_.path() / "models" / "Stable-diffusion";
    fs::create_directories(sd / "anime");
    fs::copy_file(TinySd(), sd / "tiny.safetensors");
    fs::copy_file(TinyYaml(), sd / "tiny.yaml");
    fs::copy_file(TinySd(), sd / "anime" / "tiny2.safetensors");
    fs::copy_file(TinyYaml(), sd / "anime" / "tiny2.yaml");
    std::ofstream(sd / "broken.safetensors") << "this is not a checkpoint";
    fs::copy_file(TinySd(), sd / "noconfig.safetensors");  // no yaml: defaults do not fit
    // A standalone VAE: the tiny checkpoint's first_stage_model.* without the prefix.
    auto set = engine::ReadTensorSet(TinySd());
    ASSERT_TRUE(set.ok());
    std::vector<std::pair<std::string, at::Tensor>> vae;
    for (const auto& [name, t] : set->tensors) {
      if (name.rfind("first_stage_model.", 0) == 0) vae.emplace_back(name.substr(18), t.mul(2).to(t.scalar_type()));
    }
    fs::create_directories(root_.path() / "models" / "VAE");
    ASSERT_TRUE(engine::WriteSafetensors(root_.path() / "models/VAE/tiny-vae.safetensors", vae, {}).ok());
    fs::create_directories(root_.path() / "models" / "ControlNet");
    fs::copy_file(testing::FixturesDir() / "controlnet-tiny" / "weights.safetensors",
                  root_.path() / "models/ControlNet/control_tiny.safetensors");
    auto folders = engine::ModelFolders::Open(root_.path());
    ASSERT_TRUE(folders.ok());
    folders_ = std::make_unique<engine::ModelFolders>(*std::move(folders));
    manager_ = std::make_unique<engine::ModelManager>(folders_.get(), root_.path() / "cache.json", engine::LoadOptions());
  }

  TempDir root_;
  std::unique_ptr<engine::ModelFolders> folders_;
  std::unique_ptr<engine::ModelManager> manager_;
};

TEST_F(ModelManagerTest, ListsEveryFileWithItsArchitecture) {
  auto listing = manager_->List(std::nullopt, /*compute_hashes=*/false);
  std::map<std::string, engine::ModelListing> by_file;
  for (auto& l : listing) by_file[l.file.filename] = l;
  ASSERT_EQ(by_file.count("tiny.safetensors"), 1u);
  EXPECT_EQ(by_file["tiny.safetensors"].architecture, "SD1.x");
  EXPECT_EQ(by_file["tiny.safetensors"].title, "tiny.safetensors");  // no hash yet
  EXPECT_EQ(by_file["tiny.safetensors"].short_hash.size(), 8u);
  EXPECT_EQ(by_file["anime/tiny2.safetensors"].file.name, "anime/tiny2");
  EXPECT_THAT(by_file["broken.safetensors"].error, HasSubstr("neither safetensors nor a PyTorch checkpoint"));
  EXPECT_EQ(by_file["tiny-vae.safetensors"].architecture, "VAE (SD1.x)");
  EXPECT_EQ(by_file["control_tiny.safetensors"].architecture, "ControlNet (SD1.x)");
  auto hashed = manager_->List(engine::ModelFolder::kCheckpoint, /*compute_hashes=*/true);
  for (const auto& l : hashed) {
    if (l.file.filename != "tiny.safetensors") continue;
    EXPECT_EQ(l.sha256, *engine::Sha256File(TinySd()));
    EXPECT_EQ(l.title, "tiny.safetensors [" + l.sha256.substr(0, 10) + "]");
  }
}

TEST_F(ModelManagerTest, FindsCheckpointsTheWaysWebUiNamesThem) {
  const std::string sha = *engine::Sha256File(TinySd());
  (void)manager_->List(engine::ModelFolder::kCheckpoint, true);  // fills the hash cache
  for (const std::string& query : std::vector<std::string>{"tiny.safetensors", "tiny",
                                                          "tiny.safetensors [" + sha.substr(0, 10) + "]",
                                                          sha.substr(0, 10)}) {
    auto found = manager_->FindCheckpoint(query);
    ASSERT_TRUE(found.ok()) << query << ": " << found.status();
    EXPECT_EQ(found->filename, query == sha.substr(0, 10) ? found->filename : "tiny.safetensors");
  }
  EXPECT_EQ(manager_->FindCheckpoint("tiny2")->filename, "anime/tiny2.safetensors");
  EXPECT_EQ(manager_->FindCheckpoint("anime/tiny2")->filename, "anime/tiny2.safetensors");
  auto missing = manager_->FindCheckpoint("sd_xl_base_1.0");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("available: anime/tiny2.safetensors"));
}

TEST_F(ModelManagerTest, LoadsConvertsAndKeepsTheOldModelOnFailure) {
  auto loaded = manager_->Load("tiny", "None");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const auto& w = **loaded;
  EXPECT_EQ(manager_->current(), *loaded);
  EXPECT_EQ(w.filename, "tiny.safetensors");
  EXPECT_EQ(w.title, "tiny.safetensors [" + w.sha256.substr(0, 10) + "]");
  EXPECT_EQ(w.config.source, "yaml tiny.yaml");
  EXPECT_EQ(w.vae_source, "checkpoint");
  EXPECT_EQ(w.dtype, at::kFloat);
  // Every tensor of the file lands in its component, converted from F16 to F32 without changing values.
  auto file = engine::ReadTensorSet(TinySd());
  ASSERT_TRUE(file.ok());
  std::size_t unet = 0, vae = 0, clip = 0;
  for (const auto& [name, t] : file->tensors) {
    const engine::WeightMap* map = nullptr;
    std::string key;
    if (name.rfind("model.diffusion_model.", 0) == 0) map = &w.unet, key = name.substr(22), ++unet;
    if (name.rfind("first_stage_model.", 0) == 0) map = &w.vae, key = name.substr(18), ++vae;
    if (name.rfind("cond_stage_model.transformer.", 0) == 0) map = &w.text_encoder, key = name.substr(29), ++clip;
    if (map == nullptr) continue;
    ASSERT_EQ(map->count(key), 1u) << name;
    const at::Tensor& got = map->at(key);
    if (t.is_floating_point()) {
      EXPECT_EQ(got.scalar_type(), at::kFloat) << name;
      EXPECT_TRUE(got.equal(t.to(at::kFloat))) << name;
    } else {
      EXPECT_TRUE(got.equal(t)) << name;
    }
  }
  EXPECT_EQ(w.unet.size(), unet);
  EXPECT_EQ(w.vae.size(), vae);
  EXPECT_EQ(w.text_encoder.size(), clip);
  EXPECT_EQ(w.alphas_cumprod.numel(), 1000);
  EXPECT_GT(w.resident_bytes, 0);

  // Loading what is loaded does nothing; failing loads leave it serving.
  EXPECT_EQ(*manager_->Load("tiny.safetensors", "None"), *loaded);
  for (const std::string& bad : std::vector<std::string>{"broken", "noconfig", "nope"}) {
    auto failed = manager_->Load(bad, "None");
    EXPECT_FALSE(failed.ok()) << bad;
    EXPECT_EQ(manager_->current(), *loaded) << bad;
  }
  EXPECT_THAT(std::string(manager_->Load("noconfig", "None").status().message()), HasSubstr("input_blocks.0.0.weight"));

  // A VAE file replaces the checkpoint's VAE.
  auto with_vae = manager_->Load("tiny", "tiny-vae.safetensors");
  ASSERT_TRUE(with_vae.ok()) << with_vae.status();
  EXPECT_EQ((*with_vae)->vae_source, "tiny-vae.safetensors");
  EXPECT_TRUE((*with_vae)->vae.at("decoder.conv_out.weight").equal(w.vae.at("decoder.conv_out.weight") * 2));
  // Only the VAE was loaded: the UNet and text encoder are the same tensors (shared, not reloaded).
  EXPECT_EQ((*with_vae)->unet.at("out.2.weight").data_ptr(), w.unet.at("out.2.weight").data_ptr());
  EXPECT_EQ((*with_vae)->text_encoder.begin()->second.data_ptr(), w.text_encoder.begin()->second.data_ptr());
  EXPECT_EQ((*with_vae)->sha256, w.sha256);
  // And back to the checkpoint's own VAE, again without reloading the rest.
  auto own_again = manager_->Load("tiny", "None");
  ASSERT_TRUE(own_again.ok()) << own_again.status();
  EXPECT_EQ((*own_again)->vae_source, "checkpoint");
  EXPECT_TRUE((*own_again)->vae.at("decoder.conv_out.weight").equal(w.vae.at("decoder.conv_out.weight")));
  EXPECT_EQ((*own_again)->unet.at("out.2.weight").data_ptr(), w.unet.at("out.2.weight").data_ptr());
  with_vae = manager_->Load("tiny", "tiny-vae.safetensors");
  ASSERT_TRUE(with_vae.ok()) << with_vae.status();
  auto bad_vae = manager_->Load("tiny", "missing-vae.pt");
  EXPECT_EQ(bad_vae.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(bad_vae.status().message()), HasSubstr("valid: Automatic, None, tiny-vae.safetensors"));
  auto not_a_vae = manager_->Load("tiny", "tiny-vae.safetensors");  // still current: the same request
  EXPECT_TRUE(not_a_vae.ok());

  manager_->Unload();
  EXPECT_EQ(manager_->current(), nullptr);
}

TEST_F(ModelManagerTest, AutomaticVaePicksTheSameNamedFile) {
  fs::copy_file(root_.path() / "models/VAE/tiny-vae.safetensors", root_.path() / "models/Stable-diffusion/tiny.vae.safetensors");
  auto entry = manager_->FindCheckpoint("tiny");
  ASSERT_TRUE(entry.ok());
  auto vae = manager_->ResolveVae("Automatic", *entry);
  ASSERT_TRUE(vae.ok());
  EXPECT_EQ(vae->filename(), "tiny.vae.safetensors");
  EXPECT_TRUE(manager_->ResolveVae("None", *entry)->empty());
  auto other = manager_->FindCheckpoint("tiny2");
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(manager_->ResolveVae("Automatic", *other)->empty());  // nothing named tiny2*: its own VAE
}

}  // namespace
}  // namespace atelier
