#include "common/sync/batch_combiner.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace kvwarden {
namespace {

struct Job {
  int value = 0;
  bool fail = false;
  std::atomic<int>* executed = nullptr;
};

TEST(BatchCombinerTest, ALoneCallerRunsItsOwnJobAtOnce) {
  std::vector<size_t> sizes;
  BatchCombiner<Job> combiner([&](const std::vector<const Job*>& batch) {
    sizes.push_back(batch.size());
    return batch[0]->fail ? absl::InternalError("launch failed") : absl::OkStatus();
  });
  Job ok{1}, bad{2, true};
  EXPECT_TRUE(combiner.Run(ok).ok());
  EXPECT_EQ(combiner.Run(bad).message(), "launch failed");
  EXPECT_EQ(sizes, (std::vector<size_t>{1, 1}));
  EXPECT_EQ(combiner.batches(), 2u);
}

// Jobs queued while a batch executes go together in the next one, each exactly once.
TEST(BatchCombinerTest, CallersArrivingDuringABatchShareTheNext) {
  absl::Notification first_started, release_first;
  std::atomic<int> calls{0};
  std::vector<std::vector<int>> batches;
  BatchCombiner<Job> combiner([&](const std::vector<const Job*>& batch) {
    std::vector<int> values;
    for (const Job* j : batch) values.push_back(j->value);
    batches.push_back(values);
    if (calls++ == 0) {
      first_started.Notify();
      release_first.WaitForNotification();
    }
    return absl::OkStatus();
  });
  Job first{0};
  std::thread t0([&] { EXPECT_TRUE(combiner.Run(first).ok()); });
  first_started.WaitForNotification();
  std::vector<Job> later(5);
  std::vector<std::thread> threads;
  for (int i = 0; i < 5; ++i) {
    later[i].value = i + 1;
    threads.emplace_back([&, i] { EXPECT_TRUE(combiner.Run(later[i]).ok()); });
  }
  // Let all five queue behind the running batch, then release it.
  absl::SleepFor(absl::Milliseconds(200));
  release_first.Notify();
  t0.join();
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0], std::vector<int>{0});
  std::vector<int> second = batches[1];
  std::sort(second.begin(), second.end());
  EXPECT_EQ(second, (std::vector<int>{1, 2, 3, 4, 5}));
}

// Many threads, many jobs: every job executes once, every caller gets its own batch's
// status (a failing job fails its whole batch and no other), and contention combines.
TEST(BatchCombinerTest, EveryJobOnceAndEachCallerGetsItsBatchStatus) {
  constexpr int kThreads = 8, kJobs = 300;
  std::vector<std::atomic<int>> executed(kThreads * kJobs);
  std::atomic<uint64_t> jobs_run{0};
  BatchCombiner<Job> combiner([&](const std::vector<const Job*>& batch) {
    bool fail = false;
    for (const Job* j : batch) {
      j->executed->fetch_add(1);
      fail = fail || j->fail;
    }
    jobs_run += batch.size();
    absl::SleepFor(absl::Microseconds(50));  // a launch's fixed cost
    return fail ? absl::InternalError("batch failed") : absl::OkStatus();
  });
  std::atomic<int> failed_jobs{0}, failed_flagged{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kJobs; ++i) {
        Job job{t * kJobs + i, i % 97 == 13, &executed[t * kJobs + i]};
        const absl::Status s = combiner.Run(job);
        if (!s.ok()) {
          ++failed_jobs;
          failed_flagged += job.fail;
          EXPECT_EQ(s.message(), "batch failed");
        } else {
          EXPECT_FALSE(job.fail);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::atomic<int>& e : executed) EXPECT_EQ(e.load(), 1);
  EXPECT_EQ(jobs_run.load(), uint64_t{kThreads * kJobs});
  // Every flagged job failed (and took its batch with it).
  EXPECT_EQ(failed_flagged.load(), kThreads * ((kJobs - 13 + 96) / 97));
  EXPECT_GE(failed_jobs.load(), failed_flagged.load());
  EXPECT_LT(combiner.batches(), uint64_t{kThreads * kJobs});
}

}  // namespace
}  // namespace kvwarden
