// Cost of publishing events into a job and draining them, per event: the executor pays the publish side on every
// sampling step, so it must stay far below a step's time.
#include <benchmark/benchmark.h>

#include "server/job.h"

namespace {

using atelier::server::EventCursor;
using atelier::server::Job;
using atelier::server::LossySlot;

void BM_PublishProgress(benchmark::State& state) {
  Job job("bench", "client", atelier::v1::GenerateRequest());
  atelier::v1::GenerateEvent event;
  event.mutable_progress()->set_sampling_step(1);
  for (auto _ : state) job.PublishLossy(LossySlot::kProgress, event);
}
BENCHMARK(BM_PublishProgress);

void BM_PublishAndDrain(benchmark::State& state) {
  Job job("bench", "client", atelier::v1::GenerateRequest());
  EventCursor cursor;
  atelier::v1::GenerateEvent event;
  event.mutable_result()->set_index(1);
  bool ended = false;
  absl::Status status;
  for (auto _ : state) {
    job.PublishLossy(LossySlot::kProgress, event);
    benchmark::DoNotOptimize(job.Next(cursor, &ended, &status));
  }
}
BENCHMARK(BM_PublishAndDrain);

}  // namespace
