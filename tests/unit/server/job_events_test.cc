// A job's event log: reliable events always delivered in order; lossy ones latest-wins; sequence gaps count drops.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/job.h"

namespace atelier {
namespace {

using server::EventCursor;
using server::Job;
using server::LossySlot;
namespace v1 = server::v1;

v1::GenerateEvent ProgressEvent(int step, bool preview = false) {
  v1::GenerateEvent e;
  e.mutable_progress()->set_sampling_step(step);
  if (preview) e.mutable_progress()->mutable_preview()->set_data(std::string(1000, 'p'));
  return e;
}

v1::GenerateEvent ResultEvent(int index) {
  v1::GenerateEvent e;
  e.mutable_result()->set_index(index);
  return e;
}

std::vector<std::string> DrainKinds(const Job& job, EventCursor& cursor, absl::Status* final_status = nullptr,
                                    bool* ended_out = nullptr) {
  std::vector<std::string> kinds;
  bool ended = false;
  absl::Status status;
  while (auto e = job.Next(cursor, &ended, &status)) {
    switch (e->event_case()) {
      case v1::GenerateEvent::kProgress:
        kinds.push_back("progress" + std::to_string(e->progress().sampling_step()) +
                        (e->progress().has_preview() ? "+preview" : ""));
        break;
      case v1::GenerateEvent::kResult: kinds.push_back("result" + std::to_string(e->result().index())); break;
      case v1::GenerateEvent::kQueued: kinds.push_back("queued" + std::to_string(e->queued().position())); break;
      case v1::GenerateEvent::kFinished: kinds.push_back("finished"); break;
      default: kinds.push_back("other"); break;
    }
  }
  if (final_status) *final_status = status;
  if (ended_out) *ended_out = ended;
  return kinds;
}

TEST(JobEventsTest, FastReaderSeesEverythingInOrder) {
  Job job("j", "c", v1::GenerateRequest());
  EventCursor cursor;
  job.PublishLossy(LossySlot::kProgress, ProgressEvent(1));
  EXPECT_THAT(DrainKinds(job, cursor), ::testing::ElementsAre("progress1"));
  job.PublishReliable(ResultEvent(0));
  job.PublishLossy(LossySlot::kProgress, ProgressEvent(2));
  EXPECT_THAT(DrainKinds(job, cursor), ::testing::ElementsAre("result0", "progress2"));
  EXPECT_EQ(cursor.dropped, 0u);
}

TEST(JobEventsTest, SlowReaderGetsEveryResultButOnlyTheLatestProgress) {
  Job job("j", "c", v1::GenerateRequest());
  EventCursor slow;
  for (int step = 1; step <= 100; ++step) {
    job.PublishLossy(step % 10 == 0 ? LossySlot::kPreview : LossySlot::kProgress, ProgressEvent(step, step % 10 == 0));
    if (step % 25 == 0) job.PublishReliable(ResultEvent(step / 25));
  }
  EXPECT_THAT(DrainKinds(job, slow),
              ::testing::ElementsAre("result1", "result2", "result3", "progress100+preview", "result4"));
  EXPECT_EQ(slow.dropped, 100u - 1u);  // 104 events, 5 sent
}

TEST(JobEventsTest, PreviewIsNotLostToALaterPlainProgress) {
  Job job("j", "c", v1::GenerateRequest());
  EventCursor cursor;
  job.PublishLossy(LossySlot::kPreview, ProgressEvent(10, true));
  job.PublishLossy(LossySlot::kProgress, ProgressEvent(11));
  EXPECT_THAT(DrainKinds(job, cursor), ::testing::ElementsAre("progress10+preview", "progress11"));
}

TEST(JobEventsTest, FinishEndsEveryCursorAfterItsEvents) {
  Job job("j", "c", v1::GenerateRequest());
  EventCursor early;
  job.PublishReliable(ResultEvent(0));
  EXPECT_TRUE(job.Finish(absl::CancelledError("stop"), v1::Finished()));
  EXPECT_FALSE(job.Finish(absl::OkStatus(), v1::Finished()));  // first wins
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  job.PublishReliable(ResultEvent(1));  // ignored after the end
  absl::Status status;
  bool ended = false;
  EXPECT_THAT(DrainKinds(job, early, &status, &ended), ::testing::ElementsAre("result0", "finished"));
  EXPECT_TRUE(ended);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
}

TEST(JobEventsTest, LiveCursorSkipsHistory) {
  Job job("j", "c", v1::GenerateRequest());
  job.PublishReliable(ResultEvent(0));
  job.PublishLossy(LossySlot::kProgress, ProgressEvent(5));
  EventCursor live = job.LiveCursor();
  EventCursor full;
  job.PublishReliable(ResultEvent(1));
  EXPECT_THAT(DrainKinds(job, live), ::testing::ElementsAre("progress5", "result1"));
  EXPECT_THAT(DrainKinds(job, full), ::testing::ElementsAre("result0", "progress5", "result1"));
}

TEST(JobEventsTest, PositionUpdatesOnlyWhenChanged) {
  Job job("j", "c", v1::GenerateRequest());
  EventCursor cursor;
  job.PublishPosition(3, 5);
  job.PublishPosition(3, 5);
  EXPECT_THAT(DrainKinds(job, cursor), ::testing::ElementsAre("queued3"));
  job.PublishPosition(2, 4);
  EXPECT_THAT(DrainKinds(job, cursor), ::testing::ElementsAre("queued2"));
  job.MarkRunning();
  job.PublishPosition(0, 1);  // no longer queued
  EXPECT_TRUE(DrainKinds(job, cursor).empty());
}

TEST(JobEventsTest, CancelKeepsTheFirstReason) {
  Job job("j", "c", v1::GenerateRequest());
  EXPECT_FALSE(job.cancel_requested());
  job.RequestCancel("first");
  job.RequestCancel("second");
  EXPECT_TRUE(job.cancel_requested());
  EXPECT_EQ(job.cancel_reason(), "first");
  EXPECT_FALSE(job.TakeSkip());
  job.RequestSkip();
  EXPECT_TRUE(job.TakeSkip());
  EXPECT_FALSE(job.TakeSkip());
}

}  // namespace
}  // namespace atelier
