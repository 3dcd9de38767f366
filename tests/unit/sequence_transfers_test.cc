// Transfer leases in SequenceTable: what they pin, what waits for them (compaction,
// streaming room, forks while writing), what passes them by (pressure), what they keep
// (released pages and their bytes), how they end (End, expiry, lease lapse), and every
// bad request with its code and nothing pinned afterwards.

#include <atomic>
#include <thread>

#include "cache_service/core/sequences/transfer_busy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "cache_service/retention/scissorhands/scissorhands_policy.h"
#include "cache_service/retention/streaming/streaming_policy.h"
#include "tests/support/core_fixture.h"
#include "tests/support/kv_pattern.h"

namespace kvwarden {
namespace {

using testing::Core;
using ::testing::HasSubstr;
using testing::PatternKv;

constexpr TenantId kAlpha = 0;
constexpr TenantId kBeta = 1;

class SequenceTransfersTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_TRUE(core_.Check().ok()) << core_.Check(); }

  SequenceId Create(RetentionPolicy policy = {}, LeaseId lease = 0) {
    auto id = core_.table->Create(
        {kAlpha, lease ? lease : lease_, core_.pool.get(), 1024, std::move(policy)});
    EXPECT_TRUE(id.ok()) << id.status();
    return *id;
  }
  void ReserveAndWrite(SequenceId id, uint32_t n) {
    absl::Status s = core_.ReserveAndWrite(id, kAlpha, n);
    ASSERT_TRUE(s.ok()) << s;
  }
  TransferArgs Args(SequenceId id, uint32_t slot_start, uint32_t slot_end,
                    TransferMode mode = TransferMode::kRead) {
    TransferArgs a;
    a.tenant = kAlpha;
    a.lease = lease_;
    a.sequence = id;
    a.layer_start = 0;
    a.layer_count = core_.pool->layout().num_layers;
    a.slot_start = slot_start;
    a.slot_end = slot_end;
    a.mode = mode;
    return a;
  }
  uint64_t Pinned() const { return core_.pool->Stats().pinned_pages; }

  Core core_;
  LeaseId lease_ = core_.Lease(kAlpha);
};

TEST_F(SequenceTransfersTest, PinsWholePagesAsContiguousRunsAndEndUnpins) {
  const SequenceId id = Create();
  ReserveAndWrite(id, 20);  // 5 pages of 4 slots per layer
  auto g = core_.table->BeginTransfer(Args(id, 2, 10));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->first_page, 0u);
  EXPECT_EQ(g->num_pages, 3u);  // slots 2..9 lie in pages 0, 1, 2
  EXPECT_EQ(g->epoch, 0u);
  ASSERT_EQ(g->layers.size(), 2u);
  auto snap = core_.table->Describe(id, Caller::Admin(), /*include_pages=*/true, false);
  for (uint32_t layer = 0; layer < 2; ++layer) {
    uint32_t page = 0;
    for (const PageRun& run : g->layers[layer]) {
      for (uint32_t i = 0; i < run.pages; ++i, ++page) {
        const PageId id_in_pool = snap->layer_pages[layer][page];
        EXPECT_EQ(core_.pool->ChunkOf(id_in_pool), run.chunk);
        EXPECT_EQ(core_.pool->OffsetInChunk(id_in_pool), run.offset + i * core_.pool->page_bytes());
      }
    }
    EXPECT_EQ(page, 3u);
  }
  EXPECT_FALSE(g->chunks.empty());
  EXPECT_EQ(Pinned(), 6u);
  auto listed = core_.table->ListTransfers(kAlpha);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].pinned_pages, 6u);
  EXPECT_TRUE(core_.table->ListTransfers(kBeta).empty());
  ASSERT_TRUE(core_.table->EndTransfer(g->id, Caller::Tenant(kAlpha)).ok());
  EXPECT_EQ(Pinned(), 0u);
  EXPECT_EQ(core_.table->EndTransfer(g->id, Caller::Tenant(kAlpha)).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SequenceTransfersTest, BadRequestsAreRefusedAndPinNothing) {
  const SequenceId id = Create();
  ReserveAndWrite(id, 8);
  auto code = [&](TransferArgs a) { return core_.table->BeginTransfer(a).status().code(); };
  TransferArgs a = Args(id, 0, 9);
  EXPECT_EQ(code(a), absl::StatusCode::kOutOfRange);
  a = Args(id, 0, 8);
  a.layer_start = 1;  // layers [1, 3) of 2
  EXPECT_EQ(code(a), absl::StatusCode::kOutOfRange);
  a = Args(id, 0, 8);
  a.layer_count = 0;
  EXPECT_EQ(code(a), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Args(id, 4, 4)), absl::StatusCode::kInvalidArgument);
  a = Args(id, 0, 8);
  a.ttl = absl::Minutes(2);
  EXPECT_EQ(code(a), absl::StatusCode::kInvalidArgument);
  a = Args(id, 0, 8);
  a.tenant = kBeta;  // another tenant's sequence (with beta's own lease)
  a.lease = core_.Lease(kBeta);
  auto other = core_.table->BeginTransfer(a);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(other.status().message(), absl::StrCat("sequence ", id, " not found"));
  a = Args(id, 0, 8);
  a.lease = core_.Lease(kBeta);  // beta's lease for alpha's call
  EXPECT_EQ(code(a), absl::StatusCode::kFailedPrecondition);
  // Writing pages a fork shares.
  auto fork = core_.table->Fork(id, kAlpha, lease_);
  ASSERT_TRUE(fork.ok());
  auto shared = core_.table->BeginTransfer(Args(id, 0, 4, TransferMode::kWrite));
  EXPECT_EQ(shared.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(shared.status().message(), HasSubstr("shared read-only with a fork"));
  EXPECT_TRUE(
      core_.table->BeginTransfer(Args(id, 0, 4, TransferMode::kRead)).ok());  // reading is fine
  EXPECT_EQ(core_.table->ExpireTransfers(), 0u);
  core_.clock.Advance(absl::Seconds(11));  // default TTL 10 s
  EXPECT_EQ(core_.table->ExpireTransfers(), 1u);
  EXPECT_EQ(Pinned(), 0u);
}

// The table never waits for another client: work that would compact (or fork) under a
// transfer lease answers TransferBusyError, changes nothing, and succeeds once the
// transfer ended (the RPC layer parks and retries it: parked_calls_test, daemon tests).
TEST_F(SequenceTransfersTest, StreamingRoomUnderATransferIsBusyAndChangesNothing) {
  RetentionPolicy p = MakeStreamingPolicy({8, 2});
  const SequenceId id = Create(p);
  ReserveAndWrite(id, 8);
  auto g = core_.table->BeginTransfer(Args(id, 0, 8));
  ASSERT_TRUE(g.ok());
  auto busy = core_.table->Reserve(id, kAlpha, 4);  // must drop 4 slots first
  ASSERT_TRUE(IsTransferBusy(busy.status())) << busy.status();
  EXPECT_EQ(busy.status().code(), absl::StatusCode::kUnavailable);
  // The pinned pages still hold epoch 0's bytes at their places.
  auto slice = core_.table->ReadKV(id, Caller::Admin(), 1, 0, 8, 0);
  ASSERT_TRUE(slice.ok()) << slice.status();
  const KvLayout& l = core_.pool->layout();
  EXPECT_EQ(slice->k, PatternKv(1, 1, l.num_kv_heads, 0, 8, l.token_bytes(), false));
  EXPECT_EQ(core_.table->Describe(id, Caller::Admin(), false, false)->num_tokens, 8u);
  const int changed = core_.transfers_changed;
  ASSERT_TRUE(core_.table->EndTransfer(g->id, Caller::Tenant(kAlpha)).ok());
  EXPECT_EQ(core_.transfers_changed, changed + 1);
  EXPECT_TRUE(core_.table->Reserve(id, kAlpha, 4).ok());
  EXPECT_EQ(core_.table->Describe(id, Caller::Admin(), false, false)->epoch, 1u);
}

TEST_F(SequenceTransfersTest, StatisticsUnderATransferAreBusyAndChangeNothing) {
  RetentionPolicy p =
      MakeScissorhandsPolicy({/*budget=*/4, /*window=*/2, /*recent=*/1, /*drop=*/2, /*sinks=*/0}, {4, 4});
  const SequenceId id = Create(p);
  ReserveAndWrite(id, 6);
  auto g = core_.table->BeginTransfer(Args(id, 0, 6));
  ASSERT_TRUE(g.ok());
  StatsBatch batch;
  DecodeStepStats step;
  for (uint32_t layer = 0; layer < 2; ++layer) {
    for (uint32_t h = 0; h < 2; ++h) step.heads.push_back({layer, h, 6, {0, 5}, {}});
  }
  batch.steps = {step, step};
  EXPECT_TRUE(IsTransferBusy(core_.table->ApplyStats(id, kAlpha, batch).status()));
  auto snap = core_.table->Describe(id, Caller::Admin(), false, false);
  EXPECT_EQ(snap->epoch, 0u);
  EXPECT_EQ(snap->decode_steps, 0u);
  ASSERT_TRUE(core_.table->EndTransfer(g->id, Caller::Tenant(kAlpha)).ok());
  auto r = core_.table->ApplyStats(id, kAlpha, batch);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(core_.table->Describe(id, Caller::Admin(), false, false)->epoch, 1u);
}

TEST_F(SequenceTransfersTest, ForkIsBusyUnderAWriteButNotUnderARead) {
  const SequenceId id = Create();
  ReserveAndWrite(id, 8);
  auto read = core_.table->BeginTransfer(Args(id, 0, 8));
  ASSERT_TRUE(read.ok());
  EXPECT_TRUE(core_.table->Fork(id, kAlpha, lease_).ok());
  ASSERT_TRUE(core_.table->EndTransfer(read->id, Caller::Tenant(kAlpha)).ok());

  const SequenceId other = Create();
  ReserveAndWrite(other, 6);
  auto write = core_.table->BeginTransfer(Args(other, 0, 6, TransferMode::kWrite));
  ASSERT_TRUE(write.ok()) << write.status();
  const uint64_t used = core_.pool->used_pages();
  EXPECT_TRUE(IsTransferBusy(core_.table->Fork(other, kAlpha, lease_).status()));
  EXPECT_EQ(core_.pool->used_pages(), used);
  ASSERT_TRUE(core_.table->EndTransfer(write->id, Caller::Tenant(kAlpha)).ok());
  EXPECT_TRUE(core_.table->Fork(other, kAlpha, lease_).ok());
}

TEST_F(SequenceTransfersTest, ReleaseKeepsPinnedPagesAndTheirBytesUntilTheTransferEnds) {
  const SequenceId id = Create();
  ReserveAndWrite(id, 16);                              // 4 pages per layer, 8 in all
  auto g = core_.table->BeginTransfer(Args(id, 0, 8));  // pages 0, 1 of each layer
  ASSERT_TRUE(g.ok());
  auto snap = core_.table->Describe(id, Caller::Admin(), true, false);
  const PageId pinned_page = snap->layer_pages[1][1];
  std::string before(reinterpret_cast<const char*>(core_.pool->PageData(pinned_page)),
                     core_.pool->page_bytes());
  auto freed = core_.table->Release(id, kAlpha);
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(*freed, 4u);  // the unpinned half
  EXPECT_EQ(core_.pool->used_pages(), 4u);
  EXPECT_EQ(core_.ledger.Usage(kAlpha).pages, 4u);  // still charged while pinned
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(core_.pool->PageData(pinned_page)),
                        core_.pool->page_bytes()),
            before);
  ASSERT_TRUE(core_.table->EndTransfer(g->id, Caller::Tenant(kAlpha)).ok());
  EXPECT_EQ(core_.pool->used_pages(), 0u);
  EXPECT_EQ(core_.ledger.Usage(kAlpha).pages, 0u);
}

TEST_F(SequenceTransfersTest, PressurePassesAPinnedSequenceBy) {
  RetentionPolicy p = MakeStreamingPolicy({64, 2});
  const SequenceId id = Create(p);
  ReserveAndWrite(id, 64);
  auto g = core_.table->BeginTransfer(Args(id, 0, 4));
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(core_.table->RelievePressure(core_.pool.get(), 8, 0), 0u);
  ASSERT_TRUE(core_.table->EndTransfer(g->id, Caller::Tenant(kAlpha)).ok());
  EXPECT_GT(core_.table->RelievePressure(core_.pool.get(), 8, 0), 0u);
}

TEST_F(SequenceTransfersTest, ALapsedWorkerLeaseEndsItsTransfers) {
  const LeaseId short_lease =
      core_.leases.Register(kAlpha, "short", WorkerRole::kBoth, absl::Milliseconds(200))->id;
  const SequenceId held = Create({}, lease_);
  ReserveAndWrite(held, 8);
  TransferArgs a = Args(held, 0, 8);
  a.lease = short_lease;  // a transfer by another worker of the same tenant
  a.ttl = absl::Seconds(30);
  ASSERT_TRUE(core_.table->BeginTransfer(a).ok());
  EXPECT_EQ(Pinned(), 4u);
  core_.clock.Advance(absl::Milliseconds(300));
  for (const LeaseInfo& l : core_.leases.TakeExpired()) core_.table->ReleaseByLease(l.id);
  EXPECT_EQ(Pinned(), 0u);
  EXPECT_TRUE(core_.table->ListTransfers(std::nullopt).empty());
  // The sequence belongs to the live lease and is untouched.
  EXPECT_TRUE(core_.table->Describe(held, Caller::Tenant(kAlpha), false, false).ok());
}

}  // namespace
}  // namespace kvwarden
