#include "cache_service/core/tenancy/tenant_ledger.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwarden {
namespace {

using ::testing::HasSubstr;

TEST(TenantLedgerTest, PageQuotaIsHardAndRefusalNamesTenantQuotaAndUsage) {
  TenantLedger ledger({TenantSpec{"beta", 0, 10, 1}});
  ASSERT_TRUE(ledger.Charge(0, 8, 100).ok());
  absl::Status s = ledger.Charge(0, 3, 100);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("tenant 'beta'"));
  EXPECT_THAT(s.message(), HasSubstr("quota of 10 pages"));
  EXPECT_THAT(s.message(), HasSubstr("holds 8 pages"));
  TenantUsage u = ledger.Usage(0);
  EXPECT_EQ(u.pages, 8u);
  EXPECT_EQ(u.quota_refusals, 1u);
  ASSERT_TRUE(ledger.Charge(0, 2, 100).ok());
  ledger.Refund(0, 10, 100);
  EXPECT_EQ(ledger.Usage(0).pages, 0u);
  EXPECT_EQ(ledger.Usage(0).peak_pages, 10u);
}

TEST(TenantLedgerTest, ByteQuota) {
  TenantLedger ledger({TenantSpec{"a", 1000, 0, 1}, TenantSpec{"b", 0, 5, 1}});
  EXPECT_TRUE(ledger.Charge(0, 10, 100).ok());
  EXPECT_EQ(ledger.Charge(0, 1, 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ledger.Usage(0).bytes, 1000u);
  EXPECT_EQ(ledger.Usage(1).pages, 0u);
  EXPECT_EQ(ledger.Find("b"), std::optional<TenantId>(1));
  EXPECT_EQ(ledger.Find("zzz"), std::nullopt);
}

// Fleet-wide tenants: added and changed while charged, never the config's, ids stable.
TEST(TenantLedgerTest, FleetTenantsComeChangeAndGoWithStableIds) {
  TenantLedger ledger({TenantSpec{"alpha", 0, 10, 1}});
  absl::StatusOr<TenantId> gamma = ledger.Upsert(TenantSpec{"gamma", 0, 10, 3});
  ASSERT_TRUE(gamma.ok());
  EXPECT_EQ(*gamma, 1u);
  EXPECT_EQ(ledger.size(), 2u);
  EXPECT_EQ(ledger.spec(*gamma).source, TenantSource::kCluster);
  EXPECT_EQ(ledger.weight(*gamma), 3u);
  ASSERT_TRUE(ledger.Charge(*gamma, 8, 100).ok());
  // A cut below what it holds: the next charge is refused, what it holds stays.
  ASSERT_EQ(ledger.Upsert(TenantSpec{"gamma", 0, 5, 3}).value(), *gamma);
  EXPECT_EQ(ledger.Charge(*gamma, 1, 100).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(ledger.CouldCharge(*gamma, 1, 100));
  EXPECT_EQ(ledger.Usage(*gamma).pages, 8u);
  // Raised again: charged at once.
  ASSERT_TRUE(ledger.Upsert(TenantSpec{"gamma", 0, 20, 3}).ok());
  EXPECT_TRUE(ledger.Charge(*gamma, 2, 100).ok());
  // The config's tenants are not the fleet's to change.
  absl::StatusOr<TenantId> alpha = ledger.Upsert(TenantSpec{"alpha", 0, 99, 1});
  EXPECT_EQ(alpha.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(alpha.status().message(), HasSubstr("defined in this node's config"));
  EXPECT_EQ(ledger.spec(0).quota_pages, 10u);
  ledger.MarkRemoved(0);  // a config tenant: stays
  EXPECT_EQ(ledger.Find("alpha"), std::optional<TenantId>(0));
  // Removed: not found by name, still listed with what it holds; back under the same id.
  ledger.MarkRemoved(*gamma);
  EXPECT_EQ(ledger.Find("gamma"), std::nullopt);
  EXPECT_TRUE(ledger.spec(*gamma).removed);
  EXPECT_EQ(ledger.AllUsage().size(), 2u);
  EXPECT_EQ(ledger.Upsert(TenantSpec{"gamma", 0, 20, 1}).value(), *gamma);
  EXPECT_FALSE(ledger.spec(*gamma).removed);
  EXPECT_EQ(ledger.Usage(*gamma).pages, 10u);
}

TEST(TenantLedgerTest, AtMostMaxTenantsOverALife) {
  TenantLedger ledger({TenantSpec{"alpha", 0, 10, 1}});
  for (size_t i = 1; i < TenantLedger::kMaxTenants; ++i) {
    ASSERT_TRUE(ledger.Upsert(TenantSpec{"t" + std::to_string(i), 0, 1, 1}).ok());
  }
  absl::StatusOr<TenantId> one_more = ledger.Upsert(TenantSpec{"last", 0, 1, 1});
  EXPECT_EQ(one_more.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(ledger.Upsert(TenantSpec{"t1", 0, 2, 1}).ok()) << "a change is not a new tenant";
}

TEST(HumanBytesTest, Renders) {
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(64ull << 20), "64.0 MiB");
}

}  // namespace
}  // namespace kvwarden
