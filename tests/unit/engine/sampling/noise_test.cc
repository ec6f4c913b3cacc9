// Seeds and latent noise: torch's CPU generator and WebUI's Philox emulation reproduce the rng goldens (single
// draws, variation seeds, ENSD, seed resize); a batch equals its images made alone; "GPU" on a CPU device is the
// NV emulation; bad options are errors naming the valid range or choices.
// GCC 12 at -O3 reports a false -Wnonnull inside std::vector::assign (a memmove of zero elements) for the
// option vectors assigned below; nothing in this file passes a null pointer.
#pragma GCC diagnostic ignored "-Wnonnull"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "engine/sampling/noise.h"
#include "fixture_case.h"
#include "test_support.h"

namespace atelier {
namespace {

using engine::ImageRng;
using engine::NoiseOptions;
using engine::NoiseSource;
using testing::AllClose;

std::vector<testing::FixtureCase> RngCases() { return testing::CasesOf("rng"); }

double Atol(const testing::FixtureCase& c, const std::string& src) { return c.json["tolerance"][src]["atol"]; }

NoiseSource SourceOf(const std::string& src) { return src == "cpu" ? NoiseSource::kCpu : NoiseSource::kNv; }

// A single-draw tensor name "<cpu|nv>.seed<S>.<C>x<H>x<W>": its source, seed and shape.
struct SingleDraw {
  std::string source;
  uint64_t seed = 0;
  std::vector<int64_t> shape;
};
bool ParseSingleDraw(const std::string& name, SingleDraw* draw) {
  const std::vector<std::string> parts = absl::StrSplit(name, '.');
  if (parts.size() != 3 || (parts[0] != "cpu" && parts[0] != "nv") || parts[1].rfind("seed", 0) != 0) return false;
  draw->source = parts[0];
  draw->seed = std::stoull(parts[1].substr(4));
  draw->shape.clear();
  for (const auto& d : absl::StrSplit(parts[2], 'x')) draw->shape.push_back(std::stoll(std::string(d)));
  return true;
}

// How many single draws the case records: every seed of values.seeds at values.small_shape and every seed of
// values.big_shape_seeds at values.big_shape, for each of config.randn_sources.
size_t RecordedSingleDraws(const testing::FixtureCase& c) {
  return c.json["config"]["randn_sources"].size() * (c.values["seeds"].size() + c.values["big_shape_seeds"].size());
}

at::Tensor Draw(NoiseSource source, uint64_t seed, at::IntArrayRef shape, int draws = 1) {
  auto gen = engine::CreateNoiseGenerator(source, seed, at::kCPU);
  EXPECT_TRUE(gen.ok()) << gen.status();
  at::Tensor out;
  for (int i = 0; i < draws; ++i) out = (*gen)->Randn(shape);
  return out;
}

at::Tensor Make(const NoiseOptions& options, int next_calls = 0) {
  auto rng = ImageRng::Create(options);
  EXPECT_TRUE(rng.ok()) << rng.status();
  auto x = rng->First();
  EXPECT_TRUE(x.ok()) << x.status();
  for (int i = 0; i < next_calls; ++i) {
    x = rng->Next();
    EXPECT_TRUE(x.ok()) << x.status();
  }
  return *x;
}

TEST(NoiseTest, SingleDrawsMatchTorchAndPhilox) {
  for (const auto& c : RngCases()) {
    int compared = 0;
    for (const auto& [name, dims] : c.values["tensors"].items()) {
      SingleDraw draw;
      if (!ParseSingleDraw(name, &draw)) continue;
      ASSERT_EQ(draw.shape, dims.get<std::vector<int64_t>>()) << name;
      const at::Tensor got = Draw(SourceOf(draw.source), draw.seed, draw.shape);
      EXPECT_EQ(got.scalar_type(), at::kFloat);
      EXPECT_TRUE(AllClose(got, c.io.at(name), Atol(c, draw.source), 0, name)) << name;
      ++compared;
    }
    EXPECT_EQ(static_cast<size_t>(compared), RecordedSingleDraws(c));  // 14 in the public case
    EXPECT_GT(compared, 0) << "no single-draw tensor in " << c.dir;
  }
}

// libtorch's randn is torch's own, so the CPU generator is bit-exact, including seeds at and above 2^31: every
// CPU single draw the case records.
TEST(NoiseTest, CpuGeneratorIsBitExact) {
  for (const auto& c : RngCases()) {
    int compared = 0;
    for (const auto& [name, dims] : c.values["tensors"].items()) {
      SingleDraw draw;
      if (!ParseSingleDraw(name, &draw) || draw.source != "cpu") continue;
      const at::Tensor want = c.io.at(name);
      EXPECT_TRUE(at::equal(Draw(NoiseSource::kCpu, draw.seed, want.sizes()), want)) << name;
      ++compared;
    }
    EXPECT_GT(compared, 0) << "no cpu.seed<S>.<shape> tensor in " << c.dir;
  }
}

TEST(NoiseTest, PhiloxDocumentedExampleIsExact) {
  for (const auto& c : RngCases()) {
    const auto& want = c.values["philox_seed0_3x4"];
    ASSERT_FALSE(want.empty());
    const int64_t rows = static_cast<int64_t>(want.size()), cols = static_cast<int64_t>(want[0].size());
    const at::Tensor got = Draw(NoiseSource::kNv, 0, {rows, cols});
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        EXPECT_EQ(got[i][j].item<float>(), static_cast<float>(want[i][j].get<double>())) << i << "," << j;
      }
    }
  }
}

TEST(NoiseTest, VariationSeedMatchesWebUi) {
  for (const auto& c : RngCases()) {
    const auto& v = c.values["subseed"];
    for (const std::string src : {"cpu", "nv"}) {
      const std::string p = "subseed." + src + ".";
      const double atol = Atol(c, src);
      const std::vector<int64_t> shape = c.io.at(p + "seed_noise").sizes().vec();  // one image: [4, 8, 8]
      EXPECT_TRUE(AllClose(Draw(SourceOf(src), v["seed"], shape), c.io.at(p + "seed_noise"), atol, 0, p + "seed_noise"));
      EXPECT_TRUE(AllClose(Draw(SourceOf(src), v["subseed"], shape), c.io.at(p + "subseed_noise"), atol, 0,
                           p + "subseed_noise"));
      EXPECT_TRUE(AllClose(engine::Slerp(v["subseed_strength"], c.io.at(p + "seed_noise"), c.io.at(p + "subseed_noise")),
                           c.io.at(p + "result"), atol, 0, p + "slerp"));
      NoiseOptions o;
      o.shape = shape;
      o.seeds = {v["seed"].get<int64_t>()};
      o.subseeds = {v["subseed"].get<int64_t>()};
      o.subseed_strength = v["subseed_strength"];
      o.source = SourceOf(src);
      const at::Tensor got = Make(o);
      std::vector<int64_t> batch_shape = {1};
      batch_shape.insert(batch_shape.end(), shape.begin(), shape.end());
      ASSERT_EQ(got.sizes(), batch_shape);
      EXPECT_TRUE(AllClose(got[0], c.io.at(p + "result"), atol, 0, p + "result"));
      EXPECT_FALSE(at::allclose(got[0], c.io.at(p + "seed_noise")));
    }
  }
}

TEST(NoiseTest, EtaNoiseSeedDeltaReseedsAfterTheFirstDraw) {
  for (const auto& c : RngCases()) {
    const auto& v = c.values["ensd"];
    for (const std::string src : {"cpu", "nv"}) {
      const double atol = Atol(c, src);
      int batches = 0;
      for (const int64_t delta : v["deltas"].get<std::vector<int64_t>>()) {
        const std::string p = "ensd" + std::to_string(delta) + "." + src + ".seed" + std::to_string(v["seed"].get<int64_t>()) + ".";
        NoiseOptions o;
        o.shape = c.io.at(p + "first")[0].sizes().vec();  // one image: [4, 8, 8]
        o.seeds = {v["seed"].get<int64_t>()};
        o.eta_noise_seed_delta = delta;
        o.source = SourceOf(src);
        EXPECT_TRUE(AllClose(Make(o, 0), c.io.at(p + "first"), atol, 0, p + "first"));
        EXPECT_TRUE(AllClose(Make(o, 1), c.io.at(p + "step1"), atol, 0, p + "step1"));
        EXPECT_TRUE(AllClose(Make(o, 2), c.io.at(p + "step2"), atol, 0, p + "step2"));
        // The batch of values.batch_seeds, where the case records it for this delta (31337 in the public case).
        const std::string b = "ensd" + std::to_string(delta) + "." + src + ".batch.";
        if (c.io.count(b + "first") == 0) continue;
        NoiseOptions batch = o;
        batch.seeds = v["batch_seeds"].get<std::vector<int64_t>>();
        EXPECT_TRUE(AllClose(Make(batch, 0), c.io.at(b + "first"), atol, 0, b + "first"));
        EXPECT_TRUE(AllClose(Make(batch, 1), c.io.at(b + "step1"), atol, 0, b + "step1"));
        ++batches;
      }
      EXPECT_GT(batches, 0) << "no ensd<D>." << src << ".batch.* tensors in " << c.dir;
    }
  }
}

TEST(NoiseTest, SeedResizePastesCentred) {
  for (const auto& c : RngCases()) {
    const auto& v = c.values["resize"];
    for (const std::string src : {"cpu", "nv"}) {
      const int h = v["seed_resize_from_h"], w = v["seed_resize_from_w"];
      const std::string name = "resize." + src + ".seed" + std::to_string(v["seed"].get<int64_t>()) + ".from" +
                               std::to_string(w) + "x" + std::to_string(h);
      NoiseOptions o;
      o.shape = v["target_shape"].get<std::vector<int64_t>>();
      o.seeds = {v["seed"].get<int64_t>()};
      o.seed_resize_from_h = h;
      o.seed_resize_from_w = w;
      o.source = SourceOf(src);
      const at::Tensor got = Make(o);
      EXPECT_TRUE(AllClose(got[0], c.io.at(name), Atol(c, src), 0, name));
      EXPECT_FALSE(at::allclose(got[0], Draw(o.source, o.seeds[0], o.shape)));  // the paste changed it
    }
  }
}

// Sources larger and smaller than the target in each direction, with odd differences (floor division).
TEST(NoiseTest, SeedResizeCropsAndPadsLikeWebUi) {
  NoiseOptions o;
  o.shape = {4, 8, 9};
  o.seeds = {5};
  o.seed_resize_from_h = 8 * 11;  // 11 rows > 8: dy = -2, rows 2..8 of the source into 0..6
  o.seed_resize_from_w = 8 * 6;   // 6 columns < 9: dx = 1, into columns 1..6
  o.source = NoiseSource::kNv;
  const at::Tensor got = Make(o)[0];
  const at::Tensor source = Draw(o.source, 5, {4, 11, 6});
  const at::Tensor base = Draw(o.source, 5, {4, 8, 9});
  at::Tensor want = base.clone();
  want.narrow(1, 0, 7).narrow(2, 1, 6).copy_(source.narrow(1, 2, 7));
  EXPECT_TRUE(at::equal(got, want));
}

TEST(NoiseTest, BatchEqualsImagesMadeAlone) {
  for (const NoiseSource source : {NoiseSource::kCpu, NoiseSource::kNv}) {
    NoiseOptions o;
    o.shape = {4, 6, 5};
    o.seeds = {42, 43, 3492909164};
    o.subseeds = {7, 8, 9};
    o.subseed_strength = 0.4;
    o.eta_noise_seed_delta = 31337;
    o.source = source;
    auto rng = ImageRng::Create(o);
    ASSERT_TRUE(rng.ok()) << rng.status();
    const at::Tensor first = *rng->First(), step1 = *rng->Next();
    ASSERT_EQ(first.sizes(), (std::vector<int64_t>{3, 4, 6, 5}));
    for (size_t i = 0; i < o.seeds.size(); ++i) {
      NoiseOptions alone = o;
      alone.seeds = {o.seeds[i]};
      alone.subseeds = {o.subseeds[i]};
      EXPECT_TRUE(at::equal(first[i], Make(alone, 0)[0])) << i;
      EXPECT_TRUE(at::equal(step1[i], Make(alone, 1)[0])) << i;
    }
  }
}

TEST(NoiseTest, GpuSourceOnCpuIsTheNvEmulation) {
  EXPECT_TRUE(at::equal(Draw(NoiseSource::kGpu, 42, {4, 8, 8}, 2), Draw(NoiseSource::kNv, 42, {4, 8, 8}, 2)));
  NoiseOptions o;
  o.shape = {4, 8, 8};
  o.seeds = {42, 43};
  o.eta_noise_seed_delta = 31337;
  o.source = NoiseSource::kGpu;
  const at::Tensor gpu = Make(o, 1);
  o.source = NoiseSource::kNv;
  EXPECT_TRUE(at::equal(gpu, Make(o, 1)));
  o.source = NoiseSource::kCpu;
  EXPECT_FALSE(at::equal(gpu, Make(o, 1)));
}

TEST(NoiseTest, NextBeforeFirstKeepsTheStream) {
  NoiseOptions o;
  o.shape = {4, 8, 8};
  o.seeds = {42};
  o.eta_noise_seed_delta = 31337;
  o.source = NoiseSource::kCpu;
  auto rng = ImageRng::Create(o);
  ASSERT_TRUE(rng.ok());
  auto step1 = rng->Next();
  ASSERT_TRUE(step1.ok()) << step1.status();
  EXPECT_TRUE(at::equal(*step1, Make(o, 1)));
}

TEST(NoiseTest, SlerpNearParallelFallbackKeepsWebUisReversedWeights) {
  const at::Tensor low = Draw(NoiseSource::kCpu, 1, {4, 8, 8});
  // high = 2 low is parallel: WebUI returns low * 0.3 + high * 0.7 = 1.7 low (a true lerp would give 1.3 low).
  EXPECT_TRUE(at::allclose(engine::Slerp(0.3, low, low * 2), low * 1.7, 0, 1e-6));
}

TEST(NoiseTest, RandomSeedIsInWebUisRange) {
  std::set<int64_t> seen;
  for (int i = 0; i < 200; ++i) {
    const int64_t s = engine::RandomSeed();
    EXPECT_GE(s, 0);
    EXPECT_LE(s, 4294967293);
    seen.insert(s);
  }
  EXPECT_GT(seen.size(), 190u);
}

TEST(NoiseTest, SourceNamesParse) {
  for (const auto& [name, want] : std::vector<std::pair<std::string, NoiseSource>>{
           {"GPU", NoiseSource::kGpu}, {"cpu", NoiseSource::kCpu}, {"Nv", NoiseSource::kNv}}) {
    auto got = engine::ParseNoiseSource(name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, want);
    EXPECT_EQ(engine::ParseNoiseSource(engine::NoiseSourceName(want)).value(), want);
  }
  auto bad = engine::ParseNoiseSource("cuda");
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("GPU, CPU, NV"), absl::string_view::npos) << bad.status();
}

NoiseOptions Valid() {
  NoiseOptions o;
  o.shape = {4, 8, 8};
  o.seeds = {1, 2};
  o.subseeds = {3, 4};
  o.subseed_strength = 0.5;
  return o;
}

void ExpectInvalid(const NoiseOptions& o, const std::string& names) {
  const absl::Status s = engine::ValidateNoiseOptions(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(names), absl::string_view::npos) << s;
  EXPECT_EQ(ImageRng::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NoiseTest, BadOptionsAreInvalidArgument) {
  ASSERT_TRUE(engine::ValidateNoiseOptions(Valid()).ok());
  for (const double strength : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    NoiseOptions o = Valid();
    o.subseed_strength = strength;
    ExpectInvalid(o, "[0, 1]");
  }
  {
    NoiseOptions o = Valid();
    o.seeds.clear();
    o.subseeds.clear();
    ExpectInvalid(o, "at least one seed");
  }
  {
    NoiseOptions o = Valid();
    o.subseeds.pop_back();
    ExpectInvalid(o, "one subseed per seed");
    o.subseed_strength = 0;  // subseeds unused then
    EXPECT_TRUE(engine::ValidateNoiseOptions(o).ok());
  }
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
           {4, 0, 8}, {4, -8, 8}, {4, 8}, {4, 8, 8, 1}, {4, int64_t{1} << 20, int64_t{1} << 20}}) {
    NoiseOptions o = Valid();
    o.shape = shape;
    ExpectInvalid(o, "[channels, height, width]");
  }
  for (const int size : {-8, 5}) {
    NoiseOptions o = Valid();
    o.seed_resize_from_w = size;
    ExpectInvalid(o, "0 (off) or between 8");
  }
}

TEST(NoiseTest, CudaWithoutCudaIsAnError) {
  if (at::hasCUDA()) GTEST_SKIP() << "this libtorch has CUDA";
  NoiseOptions o = Valid();
  o.device = at::Device(at::kCUDA, 0);
  EXPECT_EQ(ImageRng::Create(o).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(NoiseTest, JobSeedsFollowWebUi) {
  const auto plain = engine::AllSeeds(42, 7, 0.0, 3);
  EXPECT_EQ(plain.seeds, (std::vector<int64_t>{42, 43, 44}));
  EXPECT_EQ(plain.subseeds, (std::vector<int64_t>{7, 8, 9}));
  // With a variation strength every image keeps the seed; only the subseeds advance.
  const auto varied = engine::AllSeeds(42, 7, 0.3, 3);
  EXPECT_EQ(varied.seeds, (std::vector<int64_t>{42, 42, 42}));
  EXPECT_EQ(varied.subseeds, (std::vector<int64_t>{7, 8, 9}));
  const auto random = engine::AllSeeds(-1, -1, 0.0, 2);
  EXPECT_GE(random.seeds[0], 0);
  EXPECT_LE(random.seeds[0], 4294967293);
  EXPECT_EQ(random.seeds[1], random.seeds[0] + 1);
  EXPECT_EQ(engine::AllSeeds(-5, 0, 0.0, 1).seeds[0], -5);  // only -1 means random
}

}  // namespace
}  // namespace atelier
