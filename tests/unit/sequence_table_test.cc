#include "cache_service/core/sequences/sequence_table.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/core_fixture.h"
#include "tests/support/kv_pattern.h"

namespace kvwarden {
namespace {

using ::testing::HasSubstr;
using testing::Core;
using testing::PatternKv;

constexpr TenantId kAlpha = 0;
constexpr TenantId kBeta = 1;

class SequenceTableTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_TRUE(core_.Check().ok()) << core_.Check(); }

  SequenceId NewSeq(TenantId t, uint32_t max_tokens = 64) {
    auto id = core_.table->Create({t, core_.Lease(t), core_.pool.get(), max_tokens});
    EXPECT_TRUE(id.ok()) << id.status();
    return *id;
  }
  absl::Status Write(SequenceId id, TenantId t, uint32_t layer, uint32_t start, uint32_t n) {
    const KvLayout& l = core_.pool->layout();
    return core_.table->WriteKV(id, t, layer, start, n,
                                PatternKv(id, layer, l.num_kv_heads, start, n, l.token_bytes(), false),
                                PatternKv(id, layer, l.num_kv_heads, start, n, l.token_bytes(), true));
  }
  void ExpectReadBack(SequenceId id, uint64_t pattern_seed, uint32_t layer, uint32_t start, uint32_t end) {
    const KvLayout& l = core_.pool->layout();
    auto slice = core_.table->ReadKV(id, Caller::Admin(), layer, start, end, std::nullopt);
    ASSERT_TRUE(slice.ok()) << slice.status();
    EXPECT_TRUE(slice->positions.empty());
    EXPECT_EQ(slice->k, PatternKv(pattern_seed, layer, l.num_kv_heads, start, end - start, l.token_bytes(), false));
    EXPECT_EQ(slice->v, PatternKv(pattern_seed, layer, l.num_kv_heads, start, end - start, l.token_bytes(), true));
  }

  Core core_;
};

TEST_F(SequenceTableTest, ReserveWriteReadRoundTrip) {
  SequenceId id = NewSeq(kAlpha);
  auto r = core_.table->Reserve(id, kAlpha, 6);  // 4 tokens/page -> 2 pages per layer
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->first_position, 0u);
  EXPECT_EQ(r->first_slot, 0u);
  ASSERT_EQ(r->layer_pages.size(), 2u);
  EXPECT_EQ(r->layer_pages[0].size(), 2u);
  auto r2 = core_.table->Reserve(id, kAlpha, 3);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->first_position, 6u);
  EXPECT_EQ(r2->first_page_offset, 2u);
  EXPECT_EQ(r2->layer_pages[0].size(), 2u);  // finishes page 1, opens page 2
  EXPECT_EQ(r2->layer_pages[0][0], r->layer_pages[0][1]);
  for (uint32_t layer = 0; layer < 2; ++layer) {
    ASSERT_TRUE(Write(id, kAlpha, layer, 0, 9).ok());
  }
  ExpectReadBack(id, id, 0, 0, 9);
  ExpectReadBack(id, id, 1, 3, 7);
  EXPECT_EQ(core_.ledger.Usage(kAlpha).pages, 6u);
  auto snap = core_.table->Describe(id, Caller::Tenant(kAlpha), true, true);
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->num_tokens, 9u);
  EXPECT_EQ(snap->pages_held, 6u);
  EXPECT_EQ(snap->heads.size(), 4u);
  EXPECT_EQ(snap->heads[3].live_slots, 9u);
  EXPECT_EQ(snap->heads[3].budget, 64u);
}

TEST_F(SequenceTableTest, BadInputsAreRefusedAndChangeNothing) {
  SequenceId id = NewSeq(kAlpha, 8);
  ASSERT_TRUE(core_.table->Reserve(id, kAlpha, 4).ok());
  EXPECT_EQ(core_.table->Reserve(id, kAlpha, 0).status().code(), absl::StatusCode::kInvalidArgument);
  auto over = core_.table->Reserve(id, kAlpha, 5);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(over.status().message(), HasSubstr("max_tokens 8"));
  EXPECT_EQ(Write(id, kAlpha, 2, 0, 1).code(), absl::StatusCode::kInvalidArgument);  // layer
  EXPECT_EQ(Write(id, kAlpha, 0, 2, 3).code(), absl::StatusCode::kOutOfRange);       // past reserved
  EXPECT_EQ(core_.table->WriteKV(id, kAlpha, 0, 0, 1, "short", "short").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core_.table->ReadKV(id, Caller::Tenant(kAlpha), 0, 0, 9, std::nullopt).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(core_.table->ReadKV(id, Caller::Tenant(kAlpha), 0, 0, 4, 7).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(core_.table->Reserve(12345, kAlpha, 1).status().code(), absl::StatusCode::kNotFound);
  auto snap = core_.table->Describe(id, Caller::Tenant(kAlpha), false, false);
  EXPECT_EQ(snap->num_tokens, 4u);
  EXPECT_EQ(core_.ledger.Usage(kAlpha).pages, 2u);
}

TEST_F(SequenceTableTest, AnotherTenantsSequenceLooksLikeNoSequence) {
  SequenceId id = NewSeq(kAlpha);
  ASSERT_TRUE(core_.table->Reserve(id, kAlpha, 4).ok());
  auto theirs = core_.table->Reserve(id, kBeta, 1);
  auto none = core_.table->Reserve(999, kBeta, 1);
  EXPECT_EQ(theirs.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(theirs.status().message(), absl::StrCat("sequence ", id, " not found"));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Write(id, kBeta, 0, 0, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(core_.table->Release(id, kBeta).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(core_.table->Fork(id, kBeta, core_.Lease(kBeta)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(core_.table->Describe(id, Caller::Admin(), false, false).ok());
}

TEST_F(SequenceTableTest, QuotaRefusalChangesNothing) {
  SequenceId id = NewSeq(kBeta, 1000);                    // beta: 16 pages
  ASSERT_TRUE(core_.table->Reserve(id, kBeta, 28).ok());  // 7 pages x 2 layers = 14
  auto r = core_.table->Reserve(id, kBeta, 8);            // +2 pages x 2 layers = 18 > 16
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("tenant 'beta' quota exceeded"));
  EXPECT_EQ(core_.ledger.Usage(kBeta).pages, 14u);
  EXPECT_EQ(core_.table->Describe(id, Caller::Admin(), false, false)->num_tokens, 28u);
  EXPECT_EQ(core_.ledger.Usage(kBeta).quota_refusals, 1u);
}

TEST_F(SequenceTableTest, ForkSharesFullPagesAndCopiesThePartialOne) {
  SequenceId parent = NewSeq(kAlpha);
  ASSERT_TRUE(core_.table->Reserve(parent, kAlpha, 6).ok());  // pages: full + half, per layer
  for (uint32_t layer = 0; layer < 2; ++layer) ASSERT_TRUE(Write(parent, kAlpha, layer, 0, 6).ok());
  auto fork = core_.table->Fork(parent, kAlpha, core_.Lease(kAlpha));
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_EQ(fork->shared_pages, 2u);
  EXPECT_EQ(fork->copied_pages, 2u);
  EXPECT_EQ(core_.ledger.Usage(kAlpha).pages, 6u);  // 4 parent + 2 copies; shared counted once
  ExpectReadBack(fork->id, parent, 0, 0, 6);
  // The shared page is read-only; the copied one is the child's own.
  EXPECT_EQ(Write(fork->id, kAlpha, 0, 0, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Write(parent, kAlpha, 0, 0, 1).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(core_.table->Reserve(fork->id, kAlpha, 1).ok());
  ASSERT_TRUE(Write(fork->id, kAlpha, 0, 4, 3).ok());
  ExpectReadBack(parent, parent, 0, 0, 6);  // parent's bytes unchanged by the child
  ASSERT_TRUE(core_.Check().ok()) << core_.Check();
  EXPECT_EQ(*core_.table->Release(parent, kAlpha), 2u);  // its own partial pages only
  ExpectReadBack(fork->id, parent, 0, 0, 4);
  EXPECT_EQ(*core_.table->Release(fork->id, kAlpha), 4u);
  EXPECT_EQ(core_.ledger.Usage(kAlpha).pages, 0u);
}

TEST_F(SequenceTableTest, LapsedLeaseReleasesItsSequencesOnly) {
  LeaseId doomed = core_.Lease(kAlpha);
  LeaseId kept = core_.Lease(kAlpha);
  core_.clock.Advance(absl::Seconds(5));
  ASSERT_TRUE(core_.leases.KeepAlive(kept, kAlpha).ok());
  auto a = core_.table->Create({kAlpha, doomed, core_.pool.get(), 64});
  auto b = core_.table->Create({kAlpha, kept, core_.pool.get(), 64});
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(core_.table->Reserve(*a, kAlpha, 10).ok());
  ASSERT_TRUE(core_.table->Reserve(*b, kAlpha, 10).ok());
  ASSERT_TRUE(Write(*b, kAlpha, 1, 0, 10).ok());
  core_.clock.Advance(absl::Seconds(6));  // doomed: 11 s without keep-alive
  for (const LeaseInfo& l : core_.leases.TakeExpired()) core_.table->ReleaseByLease(l.id);
  EXPECT_EQ(core_.table->Describe(*a, Caller::Admin(), false, false).status().code(),
            absl::StatusCode::kNotFound);
  ExpectReadBack(*b, *b, 1, 0, 10);
  EXPECT_EQ(core_.ledger.Usage(kAlpha).pages, 6u);
  // A lapsed lease cannot create anything.
  auto late = core_.table->Create({kAlpha, doomed, core_.pool.get(), 64});
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kvwarden

namespace kvwarden {
namespace {

// The table reads one injected clock (the leases'): a sequence's lifetime and idle time
// are what the test's clock says, with no sleep.
class EndRecorder final : public TableEvents {
 public:
  void SequenceEnded(const RetentionStrategy& policy, SequenceEnd, absl::Duration lifetime,
                     absl::Duration idle) override {
    name = policy.name();
    this->lifetime = lifetime;
    this->idle = idle;
  }
  std::string name;
  absl::Duration lifetime, idle;
};

TEST(SequenceTableClockTest, LifetimeAndIdleComeFromTheInjectedClock) {
  Core core;
  EndRecorder events;
  SequenceTable::Options options;
  options.ledger = &core.ledger;
  options.leases = &core.leases;
  options.events = &events;
  SequenceTable table(std::move(options));
  const SequenceId id = *table.Create({kAlpha, core.Lease(kAlpha), core.pool.get(), 64});
  core.clock.Advance(absl::Seconds(5));
  ASSERT_TRUE(table.Reserve(id, kAlpha, 4).ok());
  core.clock.Advance(absl::Seconds(2));
  ASSERT_TRUE(table.Release(id, kAlpha).ok());
  EXPECT_EQ(events.name, "full");
  EXPECT_EQ(events.lifetime, absl::Seconds(7));
  EXPECT_EQ(events.idle, absl::Seconds(2));
}

}  // namespace
}  // namespace kvwarden
