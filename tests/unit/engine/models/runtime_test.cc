// --dtype resolution from the CPU's features: auto is bfloat16 only where the CPU has native bf16 dot products.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/models/runtime.h"

namespace atelier {
namespace {

using ::testing::HasSubstr;

engine::CpuFeatures Avx2Only() {
  engine::CpuFeatures cpu;
  cpu.avx2 = true;
  return cpu;
}
engine::CpuFeatures Avx512() {
  engine::CpuFeatures cpu = Avx2Only();
  cpu.avx512f = cpu.avx512bw = cpu.avx512vl = cpu.avx512dq = true;
  return cpu;
}
engine::CpuFeatures Avx512Bf16() {
  engine::CpuFeatures cpu = Avx512();
  cpu.avx512_bf16 = true;
  return cpu;
}
engine::CpuFeatures Amx() {
  engine::CpuFeatures cpu = Avx512Bf16();
  cpu.amx_bf16 = true;
  return cpu;
}

TEST(RuntimeTest, AutoPicksBfloat16OnlyWithNativeBf16DotProducts) {
  const std::pair<engine::CpuFeatures, std::string> cases[] = {
      {Avx2Only(), "float32"}, {Avx512(), "float32"}, {Avx512Bf16(), "bfloat16"}, {Amx(), "bfloat16"}};
  for (const auto& [cpu, want] : cases) {
    auto got = engine::ResolveComputeDtype("auto", "cpu", cpu);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->dtype, want) << engine::CpuFeatureList(cpu);
    EXPECT_THAT(got->reason, HasSubstr("auto"));
  }
  EXPECT_THAT(engine::ResolveComputeDtype("auto", "cpu", Amx())->reason, HasSubstr("AMX-BF16"));
  EXPECT_THAT(engine::ResolveComputeDtype("auto", "cpu", Avx512Bf16())->reason, HasSubstr("AVX512_BF16"));
  // CUDA: float16 whatever the host CPU.
  EXPECT_EQ(engine::ResolveComputeDtype("auto", "cuda:0", Avx2Only())->dtype, "float16");
}

TEST(RuntimeTest, ExplicitDtypesAndTheirErrorsNameWhatIsMissing) {
  EXPECT_EQ(engine::ResolveComputeDtype("float32", "cpu", Amx())->dtype, "float32");
  EXPECT_EQ(engine::ResolveComputeDtype("bfloat16", "cpu", Avx512())->dtype, "bfloat16");
  EXPECT_THAT(engine::ResolveComputeDtype("bfloat16", "cpu", Avx512())->reason, HasSubstr("slower than float32"));
  auto no_avx512 = engine::ResolveComputeDtype("bfloat16", "cpu", Avx2Only());
  EXPECT_EQ(no_avx512.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(no_avx512.status().message(), HasSubstr("lacks avx512bw, avx512vl, avx512dq"));
  auto half_on_cpu = engine::ResolveComputeDtype("float16", "cpu", Amx());
  EXPECT_EQ(half_on_cpu.status().code(), absl::StatusCode::kInvalidArgument);
  auto unknown = engine::ResolveComputeDtype("fp8", "cpu", Amx());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("valid: auto, float32, bfloat16, float16"));
  EXPECT_EQ(engine::CpuFeatureList(Amx()), "avx2 avx512f avx512bw avx512vl avx512dq avx512_bf16 amx_bf16");
  EXPECT_EQ(engine::CpuFeatureList(engine::CpuFeatures()), "none of avx2/avx512/amx");
}

}  // namespace
}  // namespace atelier
