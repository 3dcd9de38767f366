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

TEST(HumanBytesTest, Renders) {
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(64ull << 20), "64.0 MiB");
}

}  // namespace
}  // namespace kvwarden
