#include "cache_service/core/tenancy/worker_leases.h"

#include "gtest/gtest.h"
#include "tests/support/fake_clock.h"

namespace kvwarden {
namespace {

class WorkerLeasesTest : public ::testing::Test {
 protected:
  testing::FakeClock clock_;
  WorkerLeases leases_{LeaseOptions{absl::Seconds(2), absl::Milliseconds(100), absl::Seconds(60)},
                       &clock_};
};

TEST_F(WorkerLeasesTest, DefaultTtlAndBounds) {
  auto l = leases_.Register(0, "w", WorkerRole::kDecode, absl::ZeroDuration());
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->ttl, absl::Seconds(2));
  EXPECT_EQ(leases_.Register(0, "w", WorkerRole::kDecode, absl::Milliseconds(10)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(leases_.Register(0, "w", WorkerRole::kDecode, absl::Minutes(2)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(WorkerLeasesTest, KeepAliveExtendsAndLapseIsFailedPrecondition) {
  LeaseId id = leases_.Register(0, "w", WorkerRole::kBoth, absl::Seconds(1))->id;
  clock_.Advance(absl::Milliseconds(900));
  ASSERT_TRUE(leases_.KeepAlive(id, 0).ok());
  clock_.Advance(absl::Milliseconds(900));
  EXPECT_TRUE(leases_.CheckActive(id, 0).ok());
  EXPECT_TRUE(leases_.TakeExpired().empty());
  clock_.Advance(absl::Milliseconds(200));
  EXPECT_EQ(leases_.CheckActive(id, 0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(leases_.KeepAlive(id, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  auto expired = leases_.TakeExpired();
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].id, id);
  EXPECT_TRUE(leases_.List().empty());
}

TEST_F(WorkerLeasesTest, AnotherTenantsLeaseLooksUnknown) {
  LeaseId id = leases_.Register(0, "w", WorkerRole::kBoth, absl::ZeroDuration())->id;
  EXPECT_EQ(leases_.CheckActive(id, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(leases_.KeepAlive(id, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(leases_.CheckActive(999, 0).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kvwarden
