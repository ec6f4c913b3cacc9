// The fair queue: clients take turns, each client's jobs stay in order, positions match the real run order.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "server/job_manager.h"
#include "server/job_queue.h"

namespace atelier {
namespace {

using ::testing::ElementsAre;
using server::Job;
using server::JobQueue;

std::shared_ptr<Job> MakeJob(const std::string& id, const std::string& client) {
  return std::make_shared<Job>(id, client, server::v1::GenerateRequest());
}

std::vector<std::string> Ids(const std::vector<std::shared_ptr<Job>>& jobs) {
  std::vector<std::string> ids;
  for (const auto& j : jobs) ids.push_back(j->id());
  return ids;
}

std::vector<std::string> Drain(JobQueue& queue) {
  std::vector<std::string> ids;
  while (queue.size() > 0) ids.push_back(queue.PopBlocking()->id());
  return ids;
}

TEST(JobQueueTest, OneClientsManyJobsDoNotStarveAnother) {
  JobQueue queue(100);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(queue.Push(MakeJob("a" + std::to_string(i), "A")).ok());
  ASSERT_TRUE(queue.Push(MakeJob("b0", "B")).ok());
  const auto ordered = Ids(queue.Ordered());
  EXPECT_EQ(ordered[0], "a0");
  EXPECT_EQ(ordered[1], "b0");  // B's only job runs second, not 51st
  EXPECT_EQ(Drain(queue), ordered);
}

TEST(JobQueueTest, RoundRobinKeepsEachClientsOrderAndMatchesPopOrder) {
  JobQueue queue(100);
  for (const auto& [id, client] : std::vector<std::pair<std::string, std::string>>{
           {"a0", "A"}, {"a1", "A"}, {"a2", "A"}, {"b0", "B"}, {"c0", "C"}, {"c1", "C"}}) {
    ASSERT_TRUE(queue.Push(MakeJob(id, client)).ok());
  }
  EXPECT_THAT(Ids(queue.Ordered()), ElementsAre("a0", "b0", "c0", "a1", "c1", "a2"));
  // A newcomer mid-way joins the back of the current turn order.
  EXPECT_EQ(queue.PopBlocking()->id(), "a0");
  ASSERT_TRUE(queue.Push(MakeJob("d0", "D")).ok());
  const auto ordered = Ids(queue.Ordered());
  EXPECT_THAT(ordered, ElementsAre("b0", "c0", "a1", "d0", "c1", "a2"));
  EXPECT_EQ(Drain(queue), ordered);
}

TEST(JobQueueTest, FullQueueIsResourceExhausted) {
  JobQueue queue(2);
  ASSERT_TRUE(queue.Push(MakeJob("1", "A")).ok());
  ASSERT_TRUE(queue.Push(MakeJob("2", "B")).ok());
  const absl::Status full = queue.Push(MakeJob("3", "C"));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.message()), ::testing::HasSubstr("2 of 2"));
  queue.PopBlocking();
  EXPECT_TRUE(queue.Push(MakeJob("3", "C")).ok());
}

TEST(JobQueueTest, RemoveAndClose) {
  JobQueue queue(10);
  ASSERT_TRUE(queue.Push(MakeJob("a0", "A")).ok());
  ASSERT_TRUE(queue.Push(MakeJob("b0", "B")).ok());
  ASSERT_TRUE(queue.Push(MakeJob("a1", "A")).ok());
  EXPECT_TRUE(queue.Remove("b0"));
  EXPECT_FALSE(queue.Remove("b0"));
  EXPECT_THAT(Ids(queue.Ordered()), ElementsAre("a0", "a1"));

  std::shared_ptr<Job> popped = MakeJob("sentinel", "X");
  JobQueue empty(10);
  std::thread waiter([&] { popped = empty.PopBlocking(); });
  EXPECT_TRUE(empty.Close().empty());
  waiter.join();
  EXPECT_EQ(popped, nullptr);  // Close wakes a blocked executor
  EXPECT_EQ(empty.Push(MakeJob("late", "A")).code(), absl::StatusCode::kUnavailable);

  EXPECT_THAT(Ids(queue.Close()), ElementsAre("a0", "a1"));
  EXPECT_EQ(queue.size(), 0);
}

// A job that runs out of memory fails RESOURCE_EXHAUSTED saying so (the model stays loaded); anything else INTERNAL.
TEST(JobExceptionStatusTest, OutOfMemoryIsResourceExhausted) {
  EXPECT_EQ(server::JobExceptionStatus(std::bad_alloc()).code(), absl::StatusCode::kResourceExhausted);
  const std::runtime_error torch_cpu("[enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: can't allocate "
                                     "memory: you tried to allocate 68719476736 bytes. Error code 12");
  const absl::Status status = server::JobExceptionStatus(torch_cpu);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("the model stays loaded"));
  EXPECT_EQ(server::JobExceptionStatus(std::runtime_error("CUDA out of memory. Tried to allocate 2 GiB")).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(server::JobExceptionStatus(std::runtime_error("shape mismatch")).code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace atelier
