// ParkedCalls: a call whose work answers transfer-busy is parked off the caller's thread
// and finished exactly once: when a wake finds it done, at its deadline, on
// cancellation, at shutdown, or at once when too many are parked.

#include "cache_service/core/sequences/parked_calls.h"

#include <atomic>
#include <memory>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "cache_service/core/sequences/transfer_busy.h"
#include "gtest/gtest.h"

namespace kvwarden {
namespace {

// One call: busy while `busy` is set; records its one finish.
struct Probe {
  std::atomic<bool> busy{true};
  std::atomic<bool> cancelled{false};
  std::atomic<int> attempts{0};
  std::atomic<int> finishes{0};
  absl::Notification done;
  absl::Status status;

  ParkedCalls::Call Call(absl::Duration timeout = absl::InfiniteDuration(), uint64_t tenant = 0) {
    ParkedCalls::Call c;
    c.tenant = tenant;
    c.deadline = absl::Now() + timeout;
    c.cancelled = [this] { return cancelled.load(); };
    c.attempt = [this] {
      ++attempts;
      return busy ? TransferBusyError(7) : absl::OkStatus();
    };
    c.finish = [this](absl::Status s) {
      status = s;
      if (++finishes == 1) done.Notify();
    };
    return c;
  }
};

TEST(ParkedCallsTest, WorkThatIsNotBusyFinishesOnTheCallersThread) {
  Probe p;
  ParkedCalls parked;
  p.busy = false;
  parked.Run(p.Call());
  ASSERT_TRUE(p.done.HasBeenNotified());
  EXPECT_TRUE(p.status.ok());
  EXPECT_EQ(parked.parked(), 0u);
}

TEST(ParkedCallsTest, ParkedUntilAWakeFindsItDone) {
  Probe p;
  ParkedCalls parked;
  parked.Run(p.Call());
  EXPECT_FALSE(p.done.HasBeenNotified());
  EXPECT_EQ(parked.parked(), 1u);
  absl::SleepFor(absl::Milliseconds(100));  // polls do not retry without a wake
  EXPECT_FALSE(p.done.HasBeenNotified());
  p.busy = false;
  parked.Wake();
  ASSERT_TRUE(p.done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_TRUE(p.status.ok());
  EXPECT_EQ(p.finishes, 1);
  EXPECT_EQ(parked.parked(), 0u);
}

TEST(ParkedCallsTest, DeadlineAndCancellationFinishAtOnce) {
  Probe late, gone;
  ParkedCalls parked;
  const absl::Time start = absl::Now();
  parked.Run(late.Call(absl::Milliseconds(200)));
  parked.Run(gone.Call());
  gone.cancelled = true;
  ASSERT_TRUE(gone.done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(gone.status.code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE(late.done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(late.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(late.finishes + gone.finishes, 2);
}

TEST(ParkedCallsTest, ShutdownFailsParkedCallsAndParksNoMore) {
  auto parked = std::make_unique<ParkedCalls>();
  Probe a, b;
  parked->Run(a.Call());
  parked->Shutdown();
  ASSERT_TRUE(a.done.HasBeenNotified());
  EXPECT_EQ(a.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(a.status.message(), "kvwardend is shutting down");
  parked->Run(b.Call());
  ASSERT_TRUE(b.done.HasBeenNotified());
  EXPECT_EQ(b.status.code(), absl::StatusCode::kUnavailable);
  parked.reset();  // a second Shutdown is harmless
  EXPECT_EQ(a.finishes + b.finishes, 2);
}

TEST(ParkedCallsTest, OverTheCapTheBusyAnswerIsFinal) {
  Probe a, b, c;  // outlive `parked`, whose shutdown finishes a and b
  ParkedCalls parked(/*max_parked=*/2);
  parked.Run(a.Call());
  parked.Run(b.Call());
  parked.Run(c.Call());
  ASSERT_TRUE(c.done.HasBeenNotified());
  EXPECT_TRUE(IsTransferBusy(c.status)) << c.status;
  EXPECT_EQ(parked.parked(), 2u);
}

// Issue 24, finding 6: one tenant filled the whole parked-call room and another's call
// was refused at once. Each tenant now parks at most its share; the other tenant's call
// still waits its turn, and a slot comes back when a parked call finishes.
TEST(ParkedCallsTest, ATenantParksAtMostItsShare) {
  Probe hog[3], other, later;
  ParkedCalls parked(/*max_parked=*/8);
  parked.SetTenantShare(2);
  for (Probe& p : hog) parked.Run(p.Call(absl::InfiniteDuration(), /*tenant=*/1));
  ASSERT_TRUE(hog[2].done.HasBeenNotified());  // over tenant 1's share: final at once
  EXPECT_TRUE(IsTransferBusy(hog[2].status));
  parked.Run(other.Call(absl::InfiniteDuration(), /*tenant=*/2));
  EXPECT_FALSE(other.done.HasBeenNotified()) << "tenant 2's call was refused, not parked";
  EXPECT_EQ(parked.parked(), 3u);
  // Tenant 1's first call finishes: its share has room again.
  hog[0].busy = false;
  parked.Wake();
  hog[0].done.WaitForNotification();
  for (int i = 0; i < 100 && parked.parked() != 2; ++i) absl::SleepFor(absl::Milliseconds(5));
  parked.Run(later.Call(absl::InfiniteDuration(), /*tenant=*/1));
  EXPECT_FALSE(later.done.HasBeenNotified());
  other.busy = false;
  parked.Wake();
  other.done.WaitForNotification();
  EXPECT_TRUE(other.status.ok()) << other.status;
}

}  // namespace
}  // namespace kvwarden
