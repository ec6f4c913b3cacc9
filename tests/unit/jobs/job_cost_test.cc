// The cost model: work counted from a job's shape, and per-stage rates fitted from observed timings. Synthetic
// devices with known rates check that the fit recovers them, and that one size alone falls back to the prior.
#include "jobs/job_cost.h"

#include <gtest/gtest.h>

#include <cmath>

namespace atelier::jobs {
namespace {

JobSettings Shape(int width, int height, int steps, const char* sampler = "Euler a", const char* prompt = "cat") {
  JobSettings settings;
  settings.params.width = width;
  settings.params.height = height;
  settings.params.batch_size = 1;
  settings.params.n_iter = 1;
  settings.params.prompt = prompt;
  settings.params.sampling.steps = steps;
  auto choice = engine::ResolveSampler(sampler, "");
  EXPECT_TRUE(choice.ok()) << choice.status();
  settings.params.sampling.choice = *choice;
  return settings;
}

// A device whose true costs are known: seconds per unit of each kind.
struct Device {
  double text = 0.01, call = 0.02, conv = 2e-6, attention = 3e-10, vae = 1e-5;
  StageSeconds Run(const JobWork& w) const {
    return StageSeconds{w.text * text, w.calls * call + w.conv * conv + w.attention * attention, w.vae * vae};
  }
  double Seconds(const JobWork& w) const {
    const StageSeconds s = Run(w);
    return s.text + s.sampling + s.vae;
  }
};

TEST(JobCostTest, WorkFollowsTheShape) {
  const JobWork base = EstimateWork(Shape(512, 512, 20));
  EXPECT_DOUBLE_EQ(base.conv, 20 * 2 * 4096.0);  // 20 calls x (prompt + negative) x 64x64 latent pixels
  EXPECT_DOUBLE_EQ(base.attention, 20 * 2 * 4096.0 * 4096.0);
  EXPECT_DOUBLE_EQ(base.vae, 4096.0);
  EXPECT_DOUBLE_EQ(base.text, 2.0);
  EXPECT_DOUBLE_EQ(base.calls, 20.0);
  // A second-order sampler calls the model twice per step (but once on the last, an Euler step to sigma 0); AND
  // parts add rows; a batch multiplies rows and decodes.
  EXPECT_DOUBLE_EQ(EstimateWork(Shape(512, 512, 20, "Heun")).conv, 39.0 / 20 * base.conv);
  EXPECT_DOUBLE_EQ(EstimateWork(Shape(512, 512, 20, "Heun")).calls, 39.0);
  EXPECT_DOUBLE_EQ(EstimateWork(Shape(512, 512, 20, "Euler a", "cat AND dog AND bird")).conv, 2 * base.conv);
  JobSettings batch = Shape(512, 512, 20);
  batch.params.batch_size = 3;
  batch.params.n_iter = 2;
  EXPECT_DOUBLE_EQ(EstimateWork(batch).conv, 6 * base.conv);
  EXPECT_DOUBLE_EQ(EstimateWork(batch).vae, 6 * base.vae);
  // Twice the side: four times the pixels, sixteen times the attention.
  const JobWork big = EstimateWork(Shape(1024, 1024, 20));
  EXPECT_DOUBLE_EQ(big.conv, 4 * base.conv);
  EXPECT_DOUBLE_EQ(big.attention, 16 * base.attention);
  // Hires fix at 2x with a latent upscaler: a second pass at 4x the pixels, the decode at the final size.
  JobSettings hires = Shape(512, 512, 20);
  hires.params.hires.enabled = true;
  hires.params.hires.scale = 2;
  const JobWork hr = EstimateWork(hires);
  EXPECT_DOUBLE_EQ(hr.conv, base.conv + big.conv);
  EXPECT_DOUBLE_EQ(hr.vae, big.vae);
  // An image-space upscaler also decodes and re-encodes the first pass.
  hires.params.hires.upscaler = "Lanczos";
  EXPECT_DOUBLE_EQ(EstimateWork(hires).vae, big.vae + 1.5 * base.vae);
}

TEST(JobCostTest, NoEstimateBeforeTheFirstJobOrOnAnotherModel) {
  CostModel model;
  const JobWork work = EstimateWork(Shape(64, 64, 4));
  EXPECT_FALSE(model.EstimateSeconds(work).has_value());
  const int a = 0, b = 0;
  model.Observe(work, Device().Run(work), &a);
  EXPECT_TRUE(model.EstimateSeconds(work, &a).has_value());
  EXPECT_FALSE(model.EstimateSeconds(work, &b).has_value());
  // The first job on another model starts its rates afresh (a 10x slower model is not averaged with the first).
  Device slow;
  slow.text *= 10, slow.call *= 10, slow.conv *= 10, slow.attention *= 10, slow.vae *= 10;
  model.Observe(work, slow.Run(work), &b);
  EXPECT_NEAR(*model.EstimateSeconds(work, &b), slow.Seconds(work), 1e-9 * slow.Seconds(work) + 1e-12);
}

TEST(JobCostTest, SeveralSizesSeparateConvolutionFromAttention) {
  const Device device;
  CostModel model;
  for (int side : {64, 256, 512, 128, 768}) {
    JobSettings shape = Shape(side, side, 10);
    shape.params.batch_size = side == 128 ? 4 : 1;  // rows per call vary too, or calls and pixels go together
    const JobWork w = EstimateWork(shape);
    model.Observe(w, device.Run(w));
  }
  const CostModel::Rates rates = model.rates();
  EXPECT_NEAR(rates.conv, device.conv, 0.02 * device.conv);
  EXPECT_NEAR(rates.attention, device.attention, 0.05 * device.attention);
  EXPECT_NEAR(rates.call, device.call, 0.05 * device.call);
  EXPECT_NEAR(rates.text, device.text, 1e-9);
  EXPECT_NEAR(rates.vae, device.vae, 1e-12);
  // A size never observed, in another shape: within 5%.
  for (const JobSettings& s : {Shape(1024, 640, 30, "DPM2"), Shape(320, 192, 7)}) {
    const JobWork w = EstimateWork(s);
    EXPECT_NEAR(*model.EstimateSeconds(w), device.Seconds(w), 0.05 * device.Seconds(w));
  }
}

TEST(JobCostTest, OneSizeAloneUsesThePriorRatioAndFitsItsOwnTime) {
  const Device device;
  CostModel model;
  const JobWork w = EstimateWork(Shape(256, 256, 20));
  model.Observe(w, device.Run(w));
  model.Observe(w, device.Run(w));
  const CostModel::Rates rates = model.rates();
  EXPECT_GT(rates.conv, 0);
  EXPECT_NEAR(rates.attention / rates.conv, 1 / 16384.0, 0.2 / 16384.0);
  EXPECT_LT(rates.call * w.calls, 0.2 * (rates.conv * w.conv));  // the per-call prior: near 0
  // That size is predicted exactly (the one thing the data says).
  EXPECT_NEAR(*model.EstimateSeconds(w), device.Seconds(w), 0.01 * device.Seconds(w));
}

TEST(JobCostTest, NoisyTimingsStillGiveAUsefulEstimate) {
  const Device device;
  CostModel model;
  // ±20% noise, alternating, over a spread of sizes.
  int i = 0;
  for (int round = 0; round < 4; ++round) {
    for (int side : {128, 384, 640, 896}) {
      const JobWork w = EstimateWork(Shape(side, side, 8));
      StageSeconds s = device.Run(w);
      const double noise = (i++ % 2 == 0) ? 1.2 : 0.8;
      s.sampling *= noise, s.text *= noise, s.vae *= noise;
      model.Observe(w, s);
    }
  }
  const JobWork w = EstimateWork(Shape(1024, 1024, 20));
  const double truth = device.Seconds(w);
  EXPECT_NEAR(*model.EstimateSeconds(w), truth, 0.3 * truth);
}

}  // namespace
}  // namespace atelier::jobs
