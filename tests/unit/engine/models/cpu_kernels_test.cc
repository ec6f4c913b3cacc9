// The caching CPU allocator and the oneDNN products under the attention.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>

#include "engine/models/cpu_allocator.h"
#include "engine/models/nn_layers.h"
#include "engine/models/onednn_matmul.h"
#include "fixture_case.h"

namespace atelier {
namespace {

// The kernels split their work with at::parallel_for: run them on several threads even where the tests as a whole
// run on one (OMP_NUM_THREADS=1 under ctest).
class SeveralThreads {
 public:
  SeveralThreads() : before_(at::get_num_threads()) {
    at::set_num_threads(std::max(2, static_cast<int>(std::thread::hardware_concurrency())));
  }
  ~SeveralThreads() { at::set_num_threads(before_); }

 private:
  const int before_;
};

TEST(CachingCpuAllocatorTest, ReusesLargeBlocksAndReleasesThem) {
  engine::InstallCachingCpuAllocator(std::int64_t{1} << 30);
  engine::ReleaseCachedCpuMemory();
  void* first = nullptr;
  {
    at::Tensor a = at::empty({1 << 20}, at::kFloat);  // 4 MiB
    first = a.data_ptr();
    a.fill_(1.0f);
  }
  const engine::CpuCacheStats after_free = engine::CachingCpuAllocatorStats();
  EXPECT_GE(after_free.cached_bytes, 4 << 20);
  {
    at::Tensor b = at::empty({(1 << 20) - 100}, at::kFloat);  // a little smaller: the same block
    EXPECT_EQ(b.data_ptr(), first);
    EXPECT_GT(engine::CachingCpuAllocatorStats().hits, after_free.hits);
    EXPECT_GE(engine::CachingCpuAllocatorStats().in_use_bytes, 4 << 20);
  }
  at::Tensor small = at::ones({16});  // below the cached size: the plain allocator
  EXPECT_EQ(small.sum().item<float>(), 16.0f);
  engine::ReleaseCachedCpuMemory();
  EXPECT_EQ(engine::CachingCpuAllocatorStats().cached_bytes, 0);
  // Values survive reuse: a product through cached blocks equals the same product recomputed.
  const at::Tensor x = at::randn({300, 700}), y = at::randn({700, 500});
  const at::Tensor once = at::mm(x, y);
  EXPECT_TRUE(at::equal(at::mm(x, y), once));
}

TEST(OneDnnMatmulTest, Bf16InputsGiveFloat32ScoresWithTheScaleFolded) {
  if (!engine::OneDnnAvailable()) GTEST_SKIP() << "built without oneDNN (libdnnl-dev)";
  const at::Tensor a = at::randn({37, 40}).to(at::kBFloat16);
  const at::Tensor k = at::randn({129, 40}).to(at::kBFloat16);
  at::Tensor out = at::empty({37, 129}, at::kFloat);
  const at::Tensor want = at::mm(a.to(at::kFloat), k.to(at::kFloat).t()) * 0.125;
  if (!engine::OneDnnMatmul(a, k.t(), out, 0.125f)) GTEST_SKIP() << "this CPU cannot run bf16 oneDNN products";
  // Products of bf16 values are exact in float32: only the summation order differs.
  EXPECT_TRUE(testing::AllClose(out, want, 1e-5, 1e-5, "bf16 x bf16 -> f32"));
  // Into a strided bf16 destination (a slice of a wider tensor).
  at::Tensor wide = at::zeros({37, 200}, at::kBFloat16);
  at::Tensor dest = wide.narrow(1, 10, 129);
  ASSERT_TRUE(engine::OneDnnMatmul(a, k.t(), dest, 0.125f));
  EXPECT_TRUE(testing::AllClose(dest.to(at::kFloat), want, 0.01, 0.02, "bf16 destination"));
  EXPECT_EQ(wide.narrow(1, 0, 10).abs().sum().item<float>(), 0.0f);
  // float32 too; mismatched shapes are refused, not run.
  at::Tensor f = at::empty({37, 129}, at::kFloat);
  ASSERT_TRUE(engine::OneDnnMatmul(a.to(at::kFloat), k.to(at::kFloat).t(), f, 0.125f));
  EXPECT_TRUE(testing::AllClose(f, want, 1e-5, 1e-5, "f32"));
  at::Tensor wrong = at::empty({36, 129}, at::kFloat);
  EXPECT_FALSE(engine::OneDnnMatmul(a, k.t(), wrong));
}

TEST(OneDnnMatmulTest, SoftmaxInPlaceAndIntoBfloat16) {
  if (!engine::OneDnnAvailable()) GTEST_SKIP() << "built without oneDNN (libdnnl-dev)";
  const at::Tensor scores = at::randn({19, 300}) * 8;
  const at::Tensor want = at::softmax(scores, -1);
  at::Tensor in_place = scores.clone();
  ASSERT_TRUE(engine::OneDnnSoftmax(in_place, in_place));
  EXPECT_TRUE(testing::AllClose(in_place, want, 1e-6, 1e-5, "float32 in place"));
  at::Tensor rounded = at::empty({19, 300}, at::kBFloat16);
  if (!engine::OneDnnSoftmax(scores, rounded)) GTEST_SKIP() << "this CPU cannot write bf16 from oneDNN";
  EXPECT_TRUE(testing::AllClose(rounded.to(at::kFloat), want, 1e-3, 0.01, "bfloat16 probabilities"));
  at::Tensor wrong = at::empty({19, 299});
  EXPECT_FALSE(engine::OneDnnSoftmax(scores, wrong));
}

// The fused channels-last GroupNorm (+ SiLU) against libtorch's float32 group_norm, per image and per video of
// `frames` images, in float32 and bfloat16; other layouts take libtorch's path and agree too.
TEST(GroupNormTest, FusedChannelsLastMatchesTheReference) {
  SeveralThreads threads;
  engine::GroupNorm norm(64, 1e-5, 32);
  norm->weight.copy_(1 + 0.2 * at::randn({64}));
  norm->bias.copy_(0.3 * at::randn({64}));
  const at::Tensor x = (at::randn({4, 64, 9, 7}) * 3 + 1.5).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor want = at::group_norm(x.contiguous(), 32, norm->weight, norm->bias, 1e-5);
  const at::Tensor video = x.contiguous().view({2, 2, 64, 9, 7}).permute({0, 2, 1, 3, 4});
  const at::Tensor want_video =
      at::group_norm(video, 32, norm->weight, norm->bias, 1e-5).permute({0, 2, 1, 3, 4}).reshape({4, 64, 9, 7});
  for (bool silu : {false, true}) {
    const std::string what = silu ? " + silu" : "";
    const at::Tensor ref = silu ? at::silu(want) : want, ref_video = silu ? at::silu(want_video) : want_video;
    const at::Tensor got = norm->forward(x, 0, silu);
    EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(testing::AllClose(got, ref, 2e-5, 2e-5, "float32 channels-last" + what));
    EXPECT_TRUE(testing::AllClose(norm->forward(x, 2, silu), ref_video, 2e-5, 2e-5, "per video" + what));
    EXPECT_TRUE(testing::AllClose(norm->forward(x.contiguous(), 0, silu), ref, 2e-5, 2e-5, "plain layout" + what));
    const at::Tensor bf = norm->forward(x.to(at::kBFloat16), 0, silu);
    EXPECT_EQ(bf.scalar_type(), at::kBFloat16);
    // bf16 input rounding (2^-8 relative, times |x| / std) and output rounding.
    EXPECT_TRUE(testing::AllClose(bf.to(at::kFloat), ref, 0.03, 0.02, "bfloat16" + what));
  }
}

TEST(RowKernelsTest, LayerNormAndGegluMatchLibtorch) {
  SeveralThreads threads;
  engine::LayerNorm norm(320, 1e-5);
  norm->weight.copy_(1 + 0.2 * at::randn({320}));
  norm->bias.copy_(0.3 * at::randn({320}));
  const at::Tensor x = at::randn({2, 37, 320}) * 2 + 0.7;
  const at::Tensor want = at::layer_norm(x, {320}, norm->weight, norm->bias, 1e-5);
  EXPECT_TRUE(testing::AllClose(norm->forward(x), want, 1e-5, 1e-5, "layer norm float32"));
  EXPECT_TRUE(testing::AllClose(norm->forward(x.to(at::kBFloat16)).to(at::kFloat), want, 0.03, 0.02, "layer norm bf16"));
  EXPECT_TRUE(testing::AllClose(norm->forward(x.transpose(0, 1)), want.transpose(0, 1), 1e-5, 1e-5, "strided rows"));

  const at::Tensor proj = at::randn({2, 37, 2 * 160}) * 3;
  const auto parts = proj.chunk(2, -1);
  const at::Tensor geglu = parts[0] * at::gelu(parts[1]);
  EXPECT_TRUE(testing::AllClose(engine::Geglu(proj), geglu, 1e-5, 1e-5, "geglu float32"));
  EXPECT_TRUE(testing::AllClose(engine::Geglu(proj.to(at::kBFloat16)).to(at::kFloat), geglu, 0.05, 0.02, "geglu bf16"));
  const at::Tensor odd = at::randn({3, 2 * 10});  // a width the kernel does not take: libtorch's path
  const auto odd_parts = odd.chunk(2, -1);
  EXPECT_TRUE(testing::AllClose(engine::Geglu(odd), odd_parts[0] * at::gelu(odd_parts[1]), 0, 0, "fallback"));
}

}  // namespace
}  // namespace atelier

namespace atelier {
namespace {

// LDM's Upsample (nearest 2x, then a 3x3 convolution) as four 2x2 convolutions of the source: the same numbers as
// upsampling first, in both layouts and dtypes, odd sizes included; patching the weight in place or replacing it
// (as a LoRA does) rebuilds the folded taps.
TEST(UpsampleConvTest, FoldedTapsMatchUpsamplingFirst) {
  SeveralThreads threads;
  at::manual_seed(7);  // fixed inputs: the tolerance is for rounding at these magnitudes (CI saw 1 in 2304 unseeded)
  engine::Conv2d conv(24, 16, 3, 1, 1);
  conv->weight.copy_(at::randn({16, 24, 3, 3}) * 0.2);
  conv->bias.copy_(at::randn({16}) * 0.1);
  const auto reference = [&](const at::Tensor& x) {
    return conv->forward(at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}));
  };
  for (const at::MemoryFormat layout : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
    const at::Tensor x = at::randn({2, 24, 7, 5}).contiguous(layout);
    const at::Tensor got = conv->ForwardUpsampled2x(x);
    EXPECT_EQ(got.sizes(), (std::vector<int64_t>{2, 16, 14, 10}));
    EXPECT_TRUE(testing::AllClose(got, reference(x), 1e-5, 1e-5, "float32"));
    // A wrong fold (e.g. parities swapped) is off by the size of the values, not by rounding.
    EXPECT_GT((got - reference(x).flip(2)).abs().max().item<float>(), 0.1f);
  }
  conv->weight.mul_(-0.5);  // in place: a new version of the same data
  const at::Tensor x = at::randn({1, 24, 6, 6});
  EXPECT_TRUE(testing::AllClose(conv->ForwardUpsampled2x(x), reference(x), 1e-5, 1e-5, "after an in-place patch"));
  // The same scale as the first weight: the fold sums taps in another order, so the error grows with the values.
  conv->weight.set_data((at::randn({16, 24, 3, 3}) * 0.2).contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(testing::AllClose(conv->ForwardUpsampled2x(x), reference(x), 1e-5, 1e-5, "after a replacement"));
  // bfloat16: the folded taps round once more (sums of up to 4 bf16 taps); against the float32 result of the same
  // bf16 values, the error stays that of libtorch's own bf16 path.
  const at::Tensor xb = x.to(at::kBFloat16).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor truth = reference(xb.to(at::kFloat));
  conv->weight.set_data(conv->weight.to(at::kBFloat16));
  conv->bias.set_data(conv->bias.to(at::kBFloat16));
  const at::Tensor ours = conv->ForwardUpsampled2x(xb);
  EXPECT_EQ(ours.scalar_type(), at::kBFloat16);
  const float ours_error = (ours.to(at::kFloat) - truth).abs().max().item<float>();
  const float libtorch_error = (reference(xb).to(at::kFloat) - truth).abs().max().item<float>();
  EXPECT_LE(ours_error, 2 * libtorch_error + 1e-3) << "libtorch's bf16 error " << libtorch_error;
}

}  // namespace
}  // namespace atelier
