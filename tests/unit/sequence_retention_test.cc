// Retention inside SequenceTable: the hand-worked examples through ApplyStats, streaming
// at ReserveSlots, kept bytes unchanged by compaction, stats validation with exact codes
// and nothing applied, and the pool/ledger invariants after every change.

#include "cache_service/retention/h2o/h2o_policy.h"
#include "cache_service/retention/scissorhands/scissorhands_policy.h"
#include "cache_service/retention/streaming/streaming_policy.h"
#include "cache_service/retention/windowkv/windowkv_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/core_fixture.h"
#include "tests/support/kv_pattern.h"
#include "tests/support/policy_examples.h"

namespace kvwarden {
namespace {

using testing::Core;
using testing::CoreConfig;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::PatternKv;

constexpr TenantId kAlpha = 0;

CoreConfig OneHead(uint32_t layers = 1, uint32_t page_tokens = 2) {
  CoreConfig c;
  c.layout = KvLayout{layers, 1, 4, DType::kFp16, page_tokens};
  c.chunk_pages = 16;
  c.num_chunks = 16;
  return c;
}

RetentionPolicy Scissorhands(const kernels::ScissorhandsParams& p, uint32_t layers,
                             std::vector<uint32_t> budgets = {}) {
  if (budgets.empty()) budgets.assign(layers, p.budget);
  return MakeScissorhandsPolicy(p, std::move(budgets));
}

// The figure `name` the policy gave head `h` (kvwctl seq show prints them).
double Figure(const HeadInfo& h, const std::string& name) {
  for (const HeadFigure& f : h.figures) {
    if (f.name == name) return f.value;
  }
  ADD_FAILURE() << "no figure " << name;
  return -1;
}

class SequenceRetentionTest : public ::testing::Test {
 protected:
  explicit SequenceRetentionTest(CoreConfig cfg = OneHead()) : core_(cfg) {}
  void TearDown() override { EXPECT_TRUE(core_.Check().ok()) << core_.Check(); }

  SequenceId Create(const RetentionPolicy& policy, uint32_t max_tokens = 4096) {
    auto id =
        core_.table->Create({kAlpha, core_.Lease(kAlpha), core_.pool.get(), max_tokens, policy});
    EXPECT_TRUE(id.ok()) << id.status();
    return *id;
  }
  void ReserveAndWrite(SequenceId id, uint32_t n) {
    absl::Status s = core_.ReserveAndWrite(id, kAlpha, n);
    ASSERT_TRUE(s.ok()) << s;
  }
  // Positions live in (layer, head 0) and their K bytes equal what was written there.
  std::vector<uint32_t> LivePositionsWithBytesChecked(SequenceId id, uint32_t layer) {
    const KvLayout& l = core_.pool->layout();
    auto snap = core_.table->Describe(id, Caller::Admin(), false, false);
    auto slice = core_.table->ReadKV(id, Caller::Admin(), layer, 0, snap->num_tokens, std::nullopt);
    EXPECT_TRUE(slice.ok()) << slice.status();
    std::vector<uint32_t> pos = slice->positions;
    if (pos.empty()) {
      for (uint32_t p = 0; p < snap->num_tokens; ++p) pos.push_back(p);
    }
    const size_t tb = l.token_bytes();
    for (size_t i = 0; i < pos.size() && l.num_kv_heads == 1; ++i) {
      EXPECT_EQ(slice->k.substr(i * tb, tb), PatternKv(1, layer, 1, pos[i], 1, tb, false))
          << "position " << pos[i];
    }
    return pos;
  }

  Core core_;
};

TEST_F(SequenceRetentionTest, ScissorhandsHandWorkedExampleEndToEnd) {
  auto ex = testing::MakeScissorhandsExample();
  SequenceId id = Create(Scissorhands(ex.params, 1));
  uint32_t reserved = 0;
  RetentionResult last;
  for (const auto& step : ex.steps) {
    ReserveAndWrite(id, step.attended - reserved);
    reserved = step.attended;
    StatsBatch batch;
    batch.epoch = core_.table->Describe(id, Caller::Admin(), false, false)->epoch;
    batch.steps.push_back({{HeadStepStats{0, 0, step.attended, step.listed, {}}}});
    auto r = core_.table->ApplyStats(id, kAlpha, batch);
    ASSERT_TRUE(r.ok()) << r.status();
    last = *r;
  }
  EXPECT_EQ(last.epoch, 1u);
  ASSERT_EQ(last.changes.size(), 1u);
  EXPECT_THAT(last.changes[0].evicted_positions, ElementsAre(1, 3, 4));  // tokens 2, 4, 5
  EXPECT_EQ(last.pages_freed, 2u);  // 7 slots in 4 pages of 2 -> 4 slots in 2 pages
  EXPECT_THAT(LivePositionsWithBytesChecked(id, 0), ElementsAre(0, 2, 5, 6));
  auto snap = core_.table->Describe(id, Caller::Admin(), false, true);
  EXPECT_EQ(snap->heads[0].live_slots, 4u);
  EXPECT_EQ(snap->heads[0].evicted, 3u);
  EXPECT_EQ(snap->heads[0].budget, 6u);
  EXPECT_EQ(snap->pages_held, 2u);
}

TEST_F(SequenceRetentionTest, H2oHandWorkedExampleEndToEnd) {
  const auto ex = testing::MakeH2oExample();
  SequenceId id = Create(MakeH2oPolicy(ex.params, {ex.params.budget}));
  uint64_t epoch = 0;
  for (const auto& step : ex.steps) {
    ReserveAndWrite(id, step.reserve);
    StatsBatch batch;
    batch.epoch = epoch;
    const uint32_t n = static_cast<uint32_t>(step.row.size());
    batch.steps.push_back({{HeadStepStats{0, 0, n, {}, step.row}}});
    auto r = core_.table->ApplyStats(id, kAlpha, batch);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->changes.size(), 1u);
    EXPECT_EQ(r->changes[0].evicted_positions, step.evicted_positions);
    EXPECT_EQ(LivePositionsWithBytesChecked(id, 0), step.kept_positions);
    EXPECT_EQ(r->epoch, ++epoch);
  }
  // Listed ids carry no attention values: refused, nothing changed.
  ReserveAndWrite(id, 1);
  StatsBatch listed;
  listed.epoch = epoch;
  listed.steps.push_back({{HeadStepStats{0, 0, 4, {0, 1}, {}}}});
  auto r = core_.table->ApplyStats(id, kAlpha, listed);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("h2o takes dense attention rows"));
  EXPECT_THAT(LivePositionsWithBytesChecked(id, 0), ElementsAre(2, 6, 8, 9));
  // kvwctl seq show's figures: the survivors' sums .5, .5, .625 and the new slot's 0.
  auto snap = core_.table->Describe(id, Caller::Admin(), false, true);
  ASSERT_TRUE(snap.ok()) << snap.status();
  ASSERT_EQ(snap->heads[0].figures.size(), 2u);
  EXPECT_EQ(snap->heads[0].figures[0].name, "score_max");
  EXPECT_DOUBLE_EQ(Figure(snap->heads[0], "score_max"), 0.625);
  EXPECT_DOUBLE_EQ(Figure(snap->heads[0], "score_mean"), 1.625 / 4);
}

TEST_F(SequenceRetentionTest, DenseRowsGiveTheSameDecision) {
  auto ex = testing::MakeScissorhandsExample();
  SequenceId id = Create(Scissorhands(ex.params, 1));
  uint32_t reserved = 0;
  for (const auto& step : ex.steps) {
    ReserveAndWrite(id, step.attended - reserved);
    reserved = step.attended;
    StatsBatch batch;
    batch.epoch = core_.table->Describe(id, Caller::Admin(), false, false)->epoch;
    batch.steps.push_back(
        {{HeadStepStats{0, 0, step.attended, {}, {step.row.begin(), step.row.end()}}}});
    ASSERT_TRUE(core_.table->ApplyStats(id, kAlpha, batch).ok());
  }
  EXPECT_THAT(LivePositionsWithBytesChecked(id, 0), ElementsAre(0, 2, 5, 6));
}

TEST_F(SequenceRetentionTest, LaterStepsOfABatchAreRemappedThroughACompaction) {
  // B=4, r=1, m=2: the first step of the batch evicts; the second names pre-eviction
  // slot ids, which the daemon maps onto the survivors.
  SequenceId id = Create(Scissorhands({4, 4, 1, 2, 0}, 1));
  ReserveAndWrite(id, 5);
  StatsBatch b;
  b.steps.push_back({{HeadStepStats{0, 0, 5, {0, 4}, {}}}});  // low: 1, 2, 3 -> evict 1, 2
  b.steps.push_back({{HeadStepStats{0, 0, 5, {2, 3}, {}}}});  // old ids: 3 survives as slot 1
  auto r = core_.table->ApplyStats(id, kAlpha, b);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->steps_applied, 2u);
  EXPECT_EQ(r->epoch, 1u);
  EXPECT_THAT(LivePositionsWithBytesChecked(id, 0), ElementsAre(0, 3, 4));
  auto snap = core_.table->Describe(id, Caller::Admin(), false, true);
  // Step 2 in remapped ids: attended 3 slots (positions 0, 3, 4), listed {1}: positions 0
  // and 4 were low at step 2, position 3 at step 1 -> one low step each.
  EXPECT_EQ(Figure(snap->heads[0], "low_max"), 1.0);
  EXPECT_DOUBLE_EQ(Figure(snap->heads[0], "low_mean"), 1.0);
}

TEST_F(SequenceRetentionTest, DenseRowsAreThresholdedAgainstTheSlotsTheWorkerAttended) {
  // A later dense step of a batch is thresholded at 1/5 (the five slots the worker saw),
  // not at 1/3 (the survivors of the first step's compaction).
  SequenceId id = Create(Scissorhands({4, 4, 1, 2, 0}, 1));
  ReserveAndWrite(id, 5);
  StatsBatch b;
  b.steps.push_back({{HeadStepStats{0, 0, 5, {0, 4}, {}}}});  // evicts slots 1, 2
  b.steps.push_back({{HeadStepStats{0, 0, 5, {}, {.3f, .05f, .05f, .3f, .3f}}}});
  ASSERT_TRUE(core_.table->ApplyStats(id, kAlpha, b).ok());
  auto snap = core_.table->Describe(id, Caller::Admin(), false, true);
  // Survivors: positions 0, 3, 4, all at or above 1/5 in step 2: only position 3's
  // low step 1 remains.
  EXPECT_THAT(LivePositionsWithBytesChecked(id, 0), ElementsAre(0, 3, 4));
  EXPECT_DOUBLE_EQ(Figure(snap->heads[0], "low_mean"), 1.0 / 3);
}

TEST_F(SequenceRetentionTest, StatsOneEpochBackAreRemappedOlderAreRefused) {
  SequenceId id = Create(Scissorhands({4, 4, 1, 2, 0}, 1));
  ReserveAndWrite(id, 5);
  auto send = [&](uint64_t epoch, std::vector<uint32_t> listed, uint32_t attended = 5) {
    StatsBatch b;
    b.epoch = epoch;
    b.steps.push_back({{HeadStepStats{0, 0, attended, std::move(listed), {}}}});
    return core_.table->ApplyStats(id, kAlpha, b);
  };
  auto first = send(0, {0, 4});  // evicts slots 1, 2 -> epoch 1, live positions 0, 3, 4
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->epoch, 1u);
  // Validated against epoch 0's five slots, not today's three.
  EXPECT_EQ(send(0, {5}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(send(0, {}, 6).status().code(), absl::StatusCode::kInvalidArgument);
  // Old slot 3 is today's slot 1: the step lands on the right slots.
  auto late = send(0, {3});
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(late->steps_applied, 1u);
  auto snap = core_.table->Describe(id, Caller::Admin(), false, true);
  EXPECT_EQ(snap->decode_steps, 2u);
  EXPECT_DOUBLE_EQ(Figure(snap->heads[0], "low_mean"),
                   1.0);  // positions 0 and 4 low once more, 3 not
  EXPECT_EQ(Figure(snap->heads[0], "low_max"), 1.0);
  // Move on two epochs: epoch 0 is now too old.
  ReserveAndWrite(id, 2);  // 5 live > 4
  ASSERT_TRUE(send(1, {0}, 5).ok());
  ASSERT_EQ(core_.table->Describe(id, Caller::Admin(), false, false)->epoch, 2u);
  EXPECT_EQ(send(0, {0}).status().code(), absl::StatusCode::kFailedPrecondition);
}

// epoch = 2^64 - 1 at epoch 0: `epoch + 1` wrapped to 0 and the message was taken for
// "one epoch back", indexing an empty remap (SIGSEGV). Any epoch other than now or one
// back is FAILED_PRECONDITION and changes nothing.
TEST_F(SequenceRetentionTest, EpochsThatWrapAreRefusedNotRemapped) {
  SequenceId id = Create(Scissorhands({4, 4, 1, 2, 0}, 1));
  ReserveAndWrite(id, 5);
  for (uint64_t epoch : {~uint64_t{0}, ~uint64_t{0} - 1, uint64_t{1}, uint64_t{1} << 63}) {
    StatsBatch b;
    b.epoch = epoch;
    b.steps.push_back({{HeadStepStats{0, 0, 5, {0}, {}}}});
    auto r = core_.table->ApplyStats(id, kAlpha, b);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << epoch;
  }
  auto snap = core_.table->Describe(id, Caller::Admin(), false, true);
  EXPECT_EQ(snap->decode_steps, 0u);
  EXPECT_EQ(snap->epoch, 0u);
  EXPECT_TRUE(core_.Check().ok());
}

TEST(UnevenHeadsTest, ReserveReportsEveryHeadsFirstSlotOnceLayersDiffer) {
  CoreConfig cfg = OneHead(2, 2);
  cfg.layout.num_kv_heads = 2;
  Core core(cfg);
  RetentionPolicy policy = Scissorhands({4, 4, 1, 1, 0}, 2);
  policy.layer_budgets = {4, 3};  // layer 1 keeps fewer
  const SequenceId id =
      *core.table->Create({kAlpha, core.Lease(kAlpha), core.pool.get(), 100, policy});
  auto first = core.table->Reserve(id, kAlpha, 5);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->first_slots.empty());
  StatsBatch b;
  DecodeStepStats step;
  for (uint32_t layer = 0; layer < 2; ++layer) {
    for (uint32_t h = 0; h < 2; ++h) step.heads.push_back({layer, h, 5, {0}, {}});
  }
  b.steps.push_back(step);
  ASSERT_TRUE(core.table->ApplyStats(id, kAlpha, b).ok());
  auto next = core.table->Reserve(id, kAlpha, 1);
  ASSERT_TRUE(next.ok());
  EXPECT_THAT(next->first_slots, ElementsAre(4, 4, 3, 3));
  EXPECT_EQ(next->first_slot, 4u);
  EXPECT_TRUE(core.Check().ok()) << core.Check();
}

TEST_F(SequenceRetentionTest, StatsValidationRefusesAndAppliesNothing) {
  kernels::ScissorhandsParams p{4, 3, 1, 2, 0};
  SequenceId id = Create(Scissorhands(p, 1));
  ReserveAndWrite(id, 6);
  auto apply = [&](std::vector<HeadStepStats> heads, uint64_t epoch = 0) {
    StatsBatch b;
    b.epoch = epoch;
    b.steps.push_back({std::move(heads)});
    return core_.table->ApplyStats(id, kAlpha, b).status();
  };
  EXPECT_EQ(apply({{0, 0, 6, {7}, {}}}).code(),
            absl::StatusCode::kOutOfRange);  // slot past attended
  EXPECT_EQ(apply({{0, 0, 9, {}, {}}}).code(),
            absl::StatusCode::kInvalidArgument);  // attended > live
  EXPECT_EQ(apply({{1, 0, 6, {}, {}}}).code(),
            absl::StatusCode::kInvalidArgument);  // unknown layer
  EXPECT_EQ(apply({{0, 3, 6, {}, {}}}).code(), absl::StatusCode::kInvalidArgument);  // unknown head
  EXPECT_EQ(apply({}).code(), absl::StatusCode::kInvalidArgument);  // missing heads
  EXPECT_EQ(apply({{0, 0, 2, {}, {0.5f, NAN}}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(apply({{0, 0, 2, {}, {0.5f, -1.f}}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(apply({{0, 0, 2, {}, {0.5f}}}).code(),
            absl::StatusCode::kInvalidArgument);  // wrong length
  EXPECT_EQ(apply({{0, 0, 6, {1}, {}}}, 3).code(),
            absl::StatusCode::kFailedPrecondition);  // stale epoch
  EXPECT_THAT(apply({{0, 0, 6, {1}, {}}}, 3).message(), HasSubstr("epoch 3"));
  StatsBatch empty;
  EXPECT_EQ(core_.table->ApplyStats(id, kAlpha, empty).status().code(),
            absl::StatusCode::kInvalidArgument);
  StatsBatch wrong_kind;
  wrong_kind.window_scores.push_back({0, {1.f}});
  EXPECT_EQ(core_.table->ApplyStats(id, kAlpha, wrong_kind).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Nothing was applied: no step recorded, nothing evicted.
  auto snap = core_.table->Describe(id, Caller::Admin(), false, true);
  EXPECT_EQ(snap->decode_steps, 0u);
  EXPECT_EQ(snap->heads[0].live_slots, 6u);
  EXPECT_EQ(snap->epoch, 0u);
  // A valid step now evicts (6 > budget 4) and bumps the epoch; reads at the old epoch fail.
  ASSERT_TRUE(apply({{0, 0, 6, {0}, {}}}).ok());
  EXPECT_EQ(core_.table->ReadKV(id, Caller::Admin(), 0, 0, 6, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(core_.table->ReadKV(id, Caller::Admin(), 0, 0, 6, 1).ok());
}

TEST_F(SequenceRetentionTest, FullPolicyTakesNoStatistics) {
  SequenceId id = Create(RetentionPolicy{});
  ReserveAndWrite(id, 3);
  StatsBatch b;
  b.steps.push_back({{HeadStepStats{0, 0, 3, {}, {}}}});
  auto r = core_.table->ApplyStats(id, kAlpha, b);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("policy full"));
}

TEST_F(SequenceRetentionTest, StreamingKeepsSinksAndRecentAtReserve) {
  RetentionPolicy p = MakeStreamingPolicy({6, 2});
  SequenceId id = Create(p);
  ReserveAndWrite(id, 6);
  // 9 > 6: keep 0,1 + the newest 4 (incl. the 3 new ones); the reservation says what went.
  absl::StatusOr<Reservation> r = core_.table->Reserve(id, kAlpha, 3);
  ASSERT_TRUE(r.ok()) << r.status();
  const KvLayout& l = core_.pool->layout();
  ASSERT_EQ(r->evicted.size(), size_t{l.num_layers} * l.num_kv_heads);
  for (const HeadRetention& c : r->evicted) {
    EXPECT_THAT(c.evicted_positions, ElementsAre(2, 3, 4));
    EXPECT_EQ(c.live_slots, 3u);  // before the 3 new slots are appended
  }
  EXPECT_EQ(r->epoch, 1u);
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    ASSERT_TRUE(core_.WriteTokens(id, kAlpha, layer, 6, 3).ok());
  }
  EXPECT_THAT(LivePositionsWithBytesChecked(id, 0), ElementsAre(0, 1, 5, 6, 7, 8));
  EXPECT_EQ(core_.table->Describe(id, Caller::Admin(), false, false)->epoch, 1u);
  EXPECT_EQ(core_.table->Reserve(id, kAlpha, 5).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (int i = 0; i < 20; ++i) ReserveAndWrite(id, 1);
  EXPECT_THAT(LivePositionsWithBytesChecked(id, 0), ElementsAre(0, 1, 25, 26, 27, 28));
  EXPECT_EQ(core_.ledger.Usage(kAlpha).pages, 3u);  // 6 slots in pages of 2: bounded
}

TEST_F(SequenceRetentionTest, ForkOfACompressingSequenceCopiesItsPages) {
  kernels::ScissorhandsParams p{4, 3, 1, 2, 0};
  SequenceId id = Create(Scissorhands(p, 1));
  ReserveAndWrite(id, 4);
  auto fork = core_.table->Fork(id, kAlpha, core_.Lease(kAlpha));
  ASSERT_TRUE(fork.ok());
  EXPECT_EQ(fork->shared_pages, 0u);
  EXPECT_EQ(fork->copied_pages, 2u);
  ReserveAndWrite(fork->id, 2);
  StatsBatch b;
  b.steps.push_back({{HeadStepStats{0, 0, 6, {0, 5}, {}}}});
  ASSERT_TRUE(core_.table->ApplyStats(fork->id, kAlpha, b).ok());
  EXPECT_THAT(LivePositionsWithBytesChecked(id, 0), ElementsAre(0, 1, 2, 3));  // parent untouched
}

// Found by fuzz_policy_stats: a reservation past max_tokens (or past the caller's quota)
// was refused only after it had tightened other tenants' budgets under "pressure".
TEST(MemoryPressureTest, AReservationBoundToBeRefusedSqueezesNobody) {
  CoreConfig cfg = OneHead(1, 2);  // 64 pages of 2 slots; high-water 90% = 57 pages
  cfg.chunk_pages = 8;
  cfg.num_chunks = 8;
  cfg.beta_quota_pages = 30;
  Core core(cfg);
  const SequenceId alpha = *core.table->Create(
      {0, core.Lease(0), core.pool.get(), 1000, Scissorhands({40, 8, 2, 0, 0}, 1)});
  const SequenceId beta =
      *core.table->Create({1, core.Lease(1), core.pool.get(), 1000, RetentionPolicy{}});
  ASSERT_TRUE(core.table->Reserve(alpha, 0, 40).ok());  // 20 pages
  ASSERT_TRUE(core.table->Reserve(beta, 1, 40).ok());   // 20 pages
  auto past_max = core.table->Reserve(beta, 1, 60000);
  EXPECT_EQ(past_max.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(past_max.status().message(),
            "num_tokens: 60000 is above the sequence's max_tokens 1000");
  auto past_quota = core.table->Reserve(beta, 1, 900);  // 450 pages: beta's quota is 30
  EXPECT_EQ(past_quota.status().code(), absl::StatusCode::kResourceExhausted);
  auto a = *core.table->Describe(alpha, Caller::Admin(), false, true);
  EXPECT_TRUE(a.pressure_note.empty()) << a.pressure_note;
  EXPECT_EQ(a.heads[0].budget, 40u);
  EXPECT_EQ(a.heads[0].live_slots, 40u);
}

TEST(MemoryPressureTest, LowestWeightIsSqueezedFirstAndTheReservationFits) {
  CoreConfig cfg = OneHead(1, 2);  // 64 pages of 2 slots; high-water 90% = 57 pages
  cfg.chunk_pages = 8;
  cfg.num_chunks = 8;
  cfg.beta_quota_pages = 100;
  Core core(cfg);
  auto make = [&](TenantId t, const RetentionPolicy& p) {
    return *core.table->Create({t, core.Lease(t), core.pool.get(), 1000, p});
  };
  const SequenceId beta = make(1, Scissorhands({40, 8, 2, 0, 0}, 1));
  const SequenceId alpha = make(0, Scissorhands({40, 8, 2, 0, 0}, 1));
  const SequenceId full = make(0, RetentionPolicy{});
  ASSERT_TRUE(core.table->Reserve(beta, 1, 40).ok());   // 20 pages
  ASSERT_TRUE(core.table->Reserve(alpha, 0, 40).ok());  // 20 pages
  ASSERT_TRUE(core.table->Reserve(full, 0, 30).ok());   // 15 pages: 55 used, under 57
  EXPECT_TRUE(core.table->Describe(beta, Caller::Admin(), false, false)->pressure_note.empty());
  auto r = core.table->Reserve(full, 0, 10);  // +5 would pass the high-water mark
  ASSERT_TRUE(r.ok()) << r.status();
  auto b = *core.table->Describe(beta, Caller::Admin(), false, true);
  auto a = *core.table->Describe(alpha, Caller::Admin(), false, true);
  EXPECT_EQ(b.heads[0].budget, 30u);      // a quarter off, weight 1 first
  EXPECT_EQ(b.heads[0].live_slots, 30u);  // compressed now
  EXPECT_EQ(b.epoch, 1u);
  EXPECT_THAT(b.pressure_note, HasSubstr("budget 40 -> 30"));
  EXPECT_THAT(b.pressure_note, HasSubstr("high-water 90%"));
  EXPECT_EQ(a.heads[0].budget, 40u);  // the heavier tenant was not needed
  EXPECT_TRUE(a.pressure_note.empty());
  EXPECT_LE(core.pool->used_pages(), core.pool->high_water_pages());
  EXPECT_TRUE(core.Check().ok()) << core.Check();
}

class WindowKvRetentionTest : public SequenceRetentionTest {
 protected:
  WindowKvRetentionTest() : SequenceRetentionTest(OneHead(2, 3)) {}
};

TEST_F(WindowKvRetentionTest, HandWorkedExampleSelectsWholeWindowsForTheGroup) {
  auto ex = testing::MakeWindowKvExample();
  for (uint32_t top_p : {4u, 2u}) {
    WindowKvPolicyParams w;
    w.alpha = ex.alpha;
    w.omega = ex.omega;
    w.top_p = top_p;
    w.gamma = 2;
    w.mean_budget = ex.budget;
    w.group_budgets = {ex.budget};
    RetentionPolicy p = MakeWindowKvPolicy(w, 2);
    SequenceId id = Create(p);
    ReserveAndWrite(id, ex.n);
    StatsBatch b;
    b.window_scores.push_back({0, ex.t});
    auto r = core_.table->ApplyStats(id, kAlpha, b);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->epoch, 1u);
    const std::vector<uint32_t> want =
        top_p == 4 ? std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19}
                   : std::vector<uint32_t>{0, 1, 2, 3, 12, 13, 14, 15, 16, 17, 18, 19};
    EXPECT_EQ(LivePositionsWithBytesChecked(id, 0), want) << "top_p " << top_p;
    EXPECT_EQ(LivePositionsWithBytesChecked(id, 1), want) << "layer 1 shares the group's selection";
    StatsBatch again;
    again.epoch = 1;
    again.window_scores.push_back({1, ex.t});
    EXPECT_EQ(core_.table->ApplyStats(id, kAlpha, again).status().code(),
              absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE(core_.table->Release(id, kAlpha).ok());
  }
}

}  // namespace
}  // namespace kvwarden

namespace kvwarden {
namespace {

// A cpu device whose compaction moves the bytes and then reports a device error, as a
// CUDA launch error after both kernels ran would (issue 30, finding 2).
class MovedThenFailedDevice final : public PoolDevice {
 public:
  std::string name() const override { return cpu_->name(); }
  absl::StatusOr<std::unique_ptr<ChunkMemory>> NewChunk(const std::string& n,
                                                        size_t bytes) override {
    return cpu_->NewChunk(n, bytes);
  }
  absl::Status CopyKv(const kernels::PageGeometry& g, const std::vector<uint8_t*>& pages,
                      const std::vector<uint32_t>& begin, const std::vector<uint32_t>& count,
                      kernels::CopyDirection d, uint8_t* k, uint8_t* v) override {
    return cpu_->CopyKv(g, pages, begin, count, d, k, v);
  }
  absl::Status Compact(const kernels::PageGeometry& g, const std::vector<uint8_t*>& pages,
                       const std::vector<uint32_t>& offsets,
                       const std::vector<uint32_t>& slots) override {
    (void)cpu_->Compact(g, pages, offsets, slots);                         // the moves ran...
    return absl::DataLossError("injected: launch error after the moves");  // ...then the error
  }
  absl::Status CopyPages(const std::vector<PageCopy>& copies, size_t bytes) override {
    return cpu_->CopyPages(copies, bytes);
  }
  absl::Status CopyToHost(uint8_t* dst, const uint8_t* src, size_t bytes) override {
    return cpu_->CopyToHost(dst, src, bytes);
  }
  absl::Status CopyFromHost(uint8_t* dst, const uint8_t* src, size_t bytes) override {
    return cpu_->CopyFromHost(dst, src, bytes);
  }

 private:
  std::shared_ptr<PoolDevice> cpu_ = CpuPoolDevice();
};

// After a compaction that may have moved bytes but reported an error, no slot map can be
// trusted: the sequence answers DATA_LOSS to every read, transfer and fork, never bytes
// that disagree with its slots. Other sequences are untouched.
TEST(CompactionFailureTest, BytesInAnUnknownStateAreNeverServed) {
  CoreConfig cfg = OneHead();
  cfg.device = std::make_shared<MovedThenFailedDevice>();
  Core core(cfg);
  RetentionPolicy p = MakeStreamingPolicy({6, 2});
  auto id = core.table->Create({kAlpha, core.Lease(kAlpha), core.pool.get(), 4096, p});
  auto other =
      core.table->Create({kAlpha, core.Lease(kAlpha), core.pool.get(), 4096, RetentionPolicy()});
  ASSERT_TRUE(id.ok() && other.ok());
  ASSERT_TRUE(core.ReserveAndWrite(*id, kAlpha, 6).ok());
  ASSERT_TRUE(core.ReserveAndWrite(*other, kAlpha, 6).ok());
  (void)core.table->Reserve(*id, kAlpha, 3);  // streaming makes room: the compaction "fails"
  auto read = core.table->ReadKV(*id, Caller::Admin(), 0, 0, 6, std::nullopt);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("unknown state"));
  TransferArgs t;
  t.tenant = kAlpha;
  t.lease = core.Lease(kAlpha);
  t.sequence = *id;
  t.layer_count = 1;
  t.slot_end = 2;
  EXPECT_EQ(core.table->BeginTransfer(t).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(core.table->Fork(*id, kAlpha, core.Lease(kAlpha)).status().code(),
            absl::StatusCode::kDataLoss);
  // The other sequence reads as written.
  auto fine = core.table->ReadKV(*other, Caller::Admin(), 0, 0, 6, std::nullopt);
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->k, PatternKv(1, 0, 1, 0, 6, core.pool->layout().token_bytes(), false));
  // Releasing it gives its pages back.
  EXPECT_TRUE(core.table->Release(*id, kAlpha).ok());
  EXPECT_TRUE(core.Check().ok()) << core.Check();
}

}  // namespace
}  // namespace kvwarden
