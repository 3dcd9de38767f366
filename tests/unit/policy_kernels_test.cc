// Retention kernels (CPU references): the hand-worked examples of shared/POLICIES.md,
// bit-exact, then the invariants on random inputs from the printed gtest seed over odd
// sizes. tests/gpu/policy_kernels_cuda_test.cc holds the CUDA versions to the same.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/compaction.h"
#include "kernels/h2o.h"
#include "kernels/scissorhands.h"
#include "kernels/streaming.h"
#include "kernels/windowkv.h"
#include "tests/support/policy_examples.h"

namespace kvwarden::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

std::vector<uint32_t> Kept(const std::vector<uint8_t>& keep, uint32_t first_position = 0) {
  std::vector<uint32_t> out;
  for (uint32_t j = 0; j < keep.size(); ++j) {
    if (keep[j]) out.push_back(j + first_position);
  }
  return out;
}

TEST(ScissorhandsExample, EvictsTokens2And4And5) {
  testing::ScissorhandsExample ex = testing::MakeScissorhandsExample();
  std::vector<uint32_t> history(ex.n * ScissorhandsWords(ex.params.window), 0);
  const ScissorhandsHistory hist{history.data(), ex.params.window, ex.n};
  const uint32_t offsets[2] = {0, ex.n};
  for (size_t s = 0; s < ex.steps.size(); ++s) {
    const auto& step = ex.steps[s];
    const uint32_t attended = step.attended;
    const uint32_t listed_offsets[2] = {0, static_cast<uint32_t>(step.listed.size())};
    ASSERT_EQ(ScissorhandsRecordStepCpu({1, offsets}, hist, step.step, &attended, listed_offsets,
                                        step.listed.data()),
              KernelStatus::kOk);
  }
  std::vector<uint8_t> keep(ex.n);
  std::vector<uint32_t> low(ex.n);
  ASSERT_EQ(ScissorhandsSelectCpu({1, offsets}, hist, ex.params, keep.data(), low.data()), KernelStatus::kOk);
  EXPECT_THAT(low, ElementsAre(0, 3, 0, 3, 2, 1, 0));
  EXPECT_THAT(Kept(keep, 1), ElementsAre(1, 3, 6, 7));  // tokens are numbered from 1
}

TEST(ScissorhandsExample, StatsFromThresholdingTheRowsAreTheListedSlots) {
  // The sparse lists in the example are exactly "attention >= 1/n_t" of the rows.
  testing::ScissorhandsExample ex = testing::MakeScissorhandsExample();
  for (const auto& step : ex.steps) {
    EXPECT_EQ(testing::AboveThreshold(step.row, 1.0), step.listed) << "step " << step.step;
  }
}

TEST(WindowKvExample, TopP4KeepsW1AndW0) {
  testing::WindowKvExample ex = testing::MakeWindowKvExample();
  WindowKvParams p{ex.alpha, ex.omega, 4, ex.budget};
  std::vector<double> scores(4);
  ASSERT_EQ(WindowKvScoreCpu(ex.t.data(), 1, ex.n, p, scores.data()), KernelStatus::kOk);
  EXPECT_NEAR(scores[0], 0.300, 1e-7);  // inputs are floats: compare within float precision
  EXPECT_NEAR(scores[1], 0.3125, 1e-7);
  EXPECT_NEAR(scores[2], 0.050, 1e-7);
  EXPECT_NEAR(scores[3], 0.275, 1e-7);
  std::vector<uint8_t> keep(ex.n);
  ASSERT_EQ(WindowKvSelectCpu(scores.data(), ex.n, p, keep.data()), KernelStatus::kOk);
  EXPECT_THAT(Kept(keep), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19));
}

TEST(WindowKvExample, TopP2KeepsW3AndW0) {
  testing::WindowKvExample ex = testing::MakeWindowKvExample();
  WindowKvParams p{ex.alpha, ex.omega, 2, ex.budget};
  std::vector<double> scores(4);
  ASSERT_EQ(WindowKvScoreCpu(ex.t.data(), 1, ex.n, p, scores.data()), KernelStatus::kOk);
  EXPECT_NEAR(scores[0], 0.50, 1e-7);
  EXPECT_NEAR(scores[1], 0.325, 1e-7);
  EXPECT_NEAR(scores[3], 0.55, 1e-7);
  std::vector<uint8_t> keep(ex.n);
  ASSERT_EQ(WindowKvSelectCpu(scores.data(), ex.n, p, keep.data()), KernelStatus::kOk);
  EXPECT_THAT(Kept(keep), ElementsAre(0, 1, 2, 3, 12, 13, 14, 15, 16, 17, 18, 19));
}

TEST(WindowKvExample, Llama3GroupBudgets) {
  int64_t b[4];
  WindowKvGroupBudgets(2048, 8, 14, 4, b);
  EXPECT_THAT(b, ElementsAre(2926, 2341, 1756, 1170));
}

// gamma > lambda: budgets grow with depth; the negative step is floored, not wrapped
// (it used to be unsigned, giving every group after the first a budget near 2^31).
TEST(WindowKvExample, GroupBudgetsGrowingWithDepthFloorTheNegativeStep) {
  int64_t b[4];
  WindowKvGroupBudgets(100, 8, 6, 4, b);  // last 133, first 67, step -22
  EXPECT_THAT(b, ElementsAre(67, 89, 111, 133));
  WindowKvGroupBudgets(100, 8, 7, 4, b);  // last 114, first 86: -28/3 floors to -10, -56/3 to -19
  EXPECT_THAT(b, ElementsAre(86, 96, 105, 114));
  WindowKvGroupBudgets(100, 8, 4, 4, b);  // last 200 = 2 * B_mean: first is 0 (callers refuse)
  EXPECT_EQ(b[0], 0);
}

// recent + sinks past 2^32 must not pass as a small protected range.
TEST(ScissorhandsExample, ProtectedRangeIsSummedIn64Bits) {
  ScissorhandsParams p;
  p.budget = 100;
  p.window = 32;
  p.recent = 20;
  p.sinks = 0xFFFFFFF6u;  // 2^32 - 10: the 32-bit sum is 10
  EXPECT_FALSE(ScissorhandsProtectedFit(p));
  const uint32_t offsets[2] = {0, 120};
  std::vector<uint32_t> planes(120, 0);
  std::vector<uint8_t> keep(120);
  EXPECT_EQ(ScissorhandsSelectCpu({1, offsets}, {planes.data(), 32, 120}, p, keep.data(), nullptr),
            KernelStatus::kInvalidArgument);
}

// H2O's example at the kernel level: sums accumulated step by step, the selection after
// each step, the rows following the compaction.
TEST(H2oExample, EvictsTheLeastAttendedOldestFirstOnTies) {
  const auto ex = testing::MakeH2oExample();
  constexpr uint32_t kStride = 8;
  std::vector<float> row(kStride, 0.0f);
  std::vector<uint32_t> positions;
  uint32_t next = 0;
  for (const auto& step : ex.steps) {
    for (uint32_t i = 0; i < step.reserve; ++i) positions.push_back(next++);
    const uint32_t n = static_cast<uint32_t>(positions.size());
    const std::vector<uint32_t> offsets = {0, n};
    ASSERT_EQ(H2oAccumulateCpu({row.data(), kStride}, 1, 1, offsets.data(), step.row.data()), KernelStatus::kOk);
    std::vector<uint8_t> keep(n);
    ASSERT_EQ(H2oSelectCpu({1, offsets.data()}, {row.data(), kStride}, ex.params, keep.data()), KernelStatus::kOk);
    std::vector<uint32_t> kept_slots = Kept(keep), kept, evicted;
    for (uint32_t j = 0; j < n; ++j) (keep[j] ? kept : evicted).push_back(positions[j]);
    EXPECT_EQ(evicted, step.evicted_positions);
    EXPECT_EQ(kept, step.kept_positions);
    ASSERT_EQ(H2oCompactHeadCpu({row.data(), kStride}, 0, kept_slots.data(),
                                static_cast<uint32_t>(kept_slots.size()), n),
              KernelStatus::kOk);
    positions = kept;
  }
  EXPECT_THAT(std::vector<float>(row.begin(), row.begin() + 4), ElementsAre(0.5f, 0.5f, 0.625f, 0.0f));
}

// The nth_element selection equals evicting the first `evict` candidates of a stable
// sort by (sum, slot), on random rows with many ties.
TEST(H2oSelectTest, EqualsASortOfTheCandidates) {
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  for (int round = 0; round < 300; ++round) {
    const uint32_t n = 1 + rng() % 70;
    H2oParams p{1 + static_cast<uint32_t>(rng() % (n + 3)), 0, 0, 0};
    p.recent = p.budget > 1 ? rng() % (p.budget / 2 + 1) : 0;
    p.sinks = p.budget > p.recent + 1 ? rng() % (p.budget - p.recent) : 0;
    p.drop = rng() % 4;
    if (!H2oProtectedFit(p)) continue;
    std::vector<float> row(n);
    for (float& x : row) x = static_cast<float>(rng() % 5) * 0.25f;
    const std::vector<uint32_t> offsets = {0, n};
    std::vector<uint8_t> keep(n);
    ASSERT_EQ(H2oSelectCpu({1, offsets.data()}, {row.data(), n}, p, keep.data()), KernelStatus::kOk);
    std::vector<uint8_t> want(n, 1);
    const uint32_t evict = H2oEvictCount(n, p);
    std::vector<uint32_t> c;
    for (uint32_t j = p.sinks; evict > 0 && j < n - p.recent; ++j) c.push_back(j);
    std::stable_sort(c.begin(), c.end(), [&](uint32_t a, uint32_t b) { return row[a] < row[b]; });
    for (uint32_t i = 0; i < evict; ++i) want[c[i]] = 0;
    EXPECT_EQ(keep, want) << "n " << n << " B " << p.budget;
  }
}

TEST(StreamingTest, KeepsSinksAndRecent) {
  const uint32_t offsets[3] = {0, 10, 13};
  std::vector<uint8_t> keep(13);
  ASSERT_EQ(StreamingSelectCpu({2, offsets}, {6, 2}, keep.data()), KernelStatus::kOk);
  EXPECT_THAT(std::vector<uint8_t>(keep.begin(), keep.begin() + 10), ElementsAre(1, 1, 0, 0, 0, 0, 1, 1, 1, 1));
  EXPECT_THAT(std::vector<uint8_t>(keep.begin() + 10, keep.end()), ElementsAre(1, 1, 1));  // 3 <= budget
  EXPECT_EQ(StreamingSelectCpu({2, offsets}, {4, 4}, keep.data()), KernelStatus::kInvalidArgument);
}

// ---- invariants on random inputs --------------------------------------------------------

struct Sweep {
  uint32_t heads;
  uint32_t budget;
  int n_delta;  // n = budget + delta: just below, at, above
};

class PolicyInvariants : public ::testing::TestWithParam<Sweep> {
 protected:
  std::mt19937 rng_{::testing::UnitTest::GetInstance()->random_seed() + GetParam().heads * 131 +
                    GetParam().budget + 7 * GetParam().n_delta};
};

TEST_P(PolicyInvariants, Scissorhands) {
  const Sweep s = GetParam();
  ScissorhandsParams p{s.budget, 17, std::min<uint32_t>(3, s.budget / 3), 0, s.budget > 6 ? 1u : 0u};
  std::vector<uint32_t> offsets = {0};
  for (uint32_t h = 0; h < s.heads; ++h) {
    const int n = std::max<int>(1, static_cast<int>(s.budget) + s.n_delta + static_cast<int>(h % 3));
    offsets.push_back(offsets.back() + n);
  }
  const Segments seg{s.heads, offsets.data()};
  const uint32_t words = ScissorhandsWords(p.window);
  uint32_t stride = 0;
  for (uint32_t h = 0; h < s.heads; ++h) stride = std::max(stride, seg.size(h) + 3);  // slack on purpose
  std::vector<uint32_t> history(size_t{s.heads} * words * stride, 0);
  const ScissorhandsHistory hist{history.data(), p.window, stride};
  // 40 steps of random sparse lists, each against the slots that existed then.
  for (uint64_t step = 0; step < 40; ++step) {
    std::vector<uint32_t> attended(s.heads), lo = {0}, ids;
    for (uint32_t h = 0; h < s.heads; ++h) {
      attended[h] = std::uniform_int_distribution<uint32_t>(seg.size(h) / 2, seg.size(h))(rng_);
      for (uint32_t j = 0; j < attended[h]; ++j) {
        if (rng_() % 4 == 0) ids.push_back(j);
      }
      lo.push_back(ids.size());
    }
    ASSERT_EQ(ScissorhandsRecordStepCpu(seg, hist, step, attended.data(), lo.data(), ids.data()),
              KernelStatus::kOk);
  }
  std::vector<uint8_t> keep(seg.total());
  std::vector<uint32_t> low(seg.total());
  ASSERT_EQ(ScissorhandsSelectCpu(seg, hist, p, keep.data(), low.data()), KernelStatus::kOk);
  for (uint32_t h = 0; h < s.heads; ++h) {
    const uint32_t n = seg.size(h);
    uint32_t kept = 0;
    for (uint32_t j = 0; j < n; ++j) {
      kept += keep[seg.begin(h) + j];
      ASSERT_LE(low[seg.begin(h) + j], p.window);
      if (j >= n - std::min(n, p.recent) || j < p.sinks) ASSERT_EQ(keep[seg.begin(h) + j], 1) << "protected slot evicted";
    }
    if (n <= p.budget) {
      ASSERT_EQ(kept, n) << "budget >= n must be the identity";
    } else {
      ASSERT_LE(kept, p.budget);
      ASSERT_EQ(n - kept, ScissorhandsEvictCount(n, p));
      // Every evicted candidate has I >= every kept candidate (ties: older evicted first).
      for (uint32_t a = p.sinks; a < n - p.recent; ++a) {
        for (uint32_t b = p.sinks; b < n - p.recent; ++b) {
          if (!keep[seg.begin(h) + a] && keep[seg.begin(h) + b]) {
            const uint32_t la = low[seg.begin(h) + a], lb = low[seg.begin(h) + b];
            ASSERT_TRUE(la > lb || (la == lb && a < b)) << "head " << h << " slots " << a << "," << b;
          }
        }
      }
    }
  }
}

TEST_P(PolicyInvariants, ScalingAttentionChangesNothingForWindowKv) {
  const Sweep s = GetParam();
  const uint32_t alpha = 3, omega = 5;
  const uint32_t n = std::max<int>(alpha + 1, static_cast<int>(s.budget) + s.n_delta);
  std::vector<float> t(size_t{s.heads} * (n - alpha));
  for (float& x : t) x = std::uniform_real_distribution<float>(0, 1)(rng_);
  WindowKvParams p{alpha, omega, 3, std::max(s.budget, alpha + 1)};
  const uint32_t windows = WindowKvNumWindows(n - alpha, omega);
  std::vector<double> scores(windows), scaled_scores(windows);
  std::vector<uint8_t> keep(n), scaled_keep(n);
  ASSERT_EQ(WindowKvScoreCpu(t.data(), s.heads, n, p, scores.data()), KernelStatus::kOk);
  ASSERT_EQ(WindowKvSelectCpu(scores.data(), n, p, keep.data()), KernelStatus::kOk);
  for (float& x : t) x *= 4.0f;  // a power of two: exact in floating point
  ASSERT_EQ(WindowKvScoreCpu(t.data(), s.heads, n, p, scaled_scores.data()), KernelStatus::kOk);
  ASSERT_EQ(WindowKvSelectCpu(scaled_scores.data(), n, p, scaled_keep.data()), KernelStatus::kOk);
  EXPECT_EQ(keep, scaled_keep);
  // Observation window kept; whole windows only; within budget; identity when it fits.
  uint32_t kept = 0;
  for (uint32_t j = 0; j < n; ++j) kept += keep[j];
  for (uint32_t j = n - alpha; j < n; ++j) ASSERT_EQ(keep[j], 1);
  for (uint32_t k = 0; k < windows; ++k) {
    for (uint32_t j = k * omega; j < std::min((k + 1) * omega, n - alpha); ++j) {
      ASSERT_EQ(keep[j], keep[k * omega]) << "window " << k << " split";
    }
  }
  if (n <= p.budget) {
    EXPECT_EQ(kept, n);
  } else {
    EXPECT_LE(kept, p.budget);
  }
}

TEST_P(PolicyInvariants, StreamingWithinBudgetAndIdentityWhenItFits) {
  const Sweep s = GetParam();
  std::vector<uint32_t> offsets = {0};
  for (uint32_t h = 0; h < s.heads; ++h) {
    offsets.push_back(offsets.back() + std::max<int>(1, static_cast<int>(s.budget) + s.n_delta));
  }
  std::vector<uint8_t> keep(offsets.back());
  StreamingParams p{s.budget, std::min<uint32_t>(4, s.budget - 1)};
  ASSERT_EQ(StreamingSelectCpu({s.heads, offsets.data()}, p, keep.data()), KernelStatus::kOk);
  for (uint32_t h = 0; h < s.heads; ++h) {
    uint32_t kept = 0;
    const uint32_t n = offsets[h + 1] - offsets[h];
    for (uint32_t j = 0; j < n; ++j) kept += keep[offsets[h] + j];
    EXPECT_EQ(kept, std::min(n, s.budget));
  }
}

INSTANTIATE_TEST_SUITE_P(
    OddSizes, PolicyInvariants,
    ::testing::Values(Sweep{1, 8, -1}, Sweep{1, 8, 0}, Sweep{1, 8, 1}, Sweep{7, 16, -1},
                      Sweep{7, 16, 0}, Sweep{7, 16, 9}, Sweep{32, 64, -1}, Sweep{32, 64, 0},
                      Sweep{32, 64, 40}),
    [](const ::testing::TestParamInfo<Sweep>& info) {
      const int d = info.param.n_delta;
      return "heads" + std::to_string(info.param.heads) + "_budget" + std::to_string(info.param.budget) +
             (d < 0 ? "_below" : d == 0 ? "_at" : "_above" + std::to_string(d));
    });

// Compaction: kept slots land at the front in order with their bytes unchanged; for page
// sizes 1, 3 and 16 and odd head counts.
class CompactionTest : public ::testing::TestWithParam<std::tuple<uint32_t, uint32_t>> {};

TEST_P(CompactionTest, KeptBytesMoveToTheFrontUnchanged) {
  const auto [page_tokens, heads] = GetParam();
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed() + page_tokens * 7 + heads);
  PageGeometry g{heads, 3, page_tokens, 2};
  const uint32_t pages = 5, cap = pages * page_tokens;
  std::vector<uint8_t> arena(g.page_bytes() * pages);
  for (auto& b : arena) b = static_cast<uint8_t>(rng());
  const std::vector<uint8_t> before = arena;
  std::vector<uint8_t*> ptrs;
  for (uint32_t i = 0; i < pages; ++i) ptrs.push_back(arena.data() + i * g.page_bytes());
  PagedLayerView view{g, ptrs.data(), pages};
  std::vector<uint32_t> offsets = {0}, kept;
  for (uint32_t h = 0; h < heads; ++h) {
    for (uint32_t j = 0; j < cap; ++j) {
      if (rng() % 3 != 0) kept.push_back(j);
    }
    offsets.push_back(kept.size());
  }
  ASSERT_EQ(CompactLayerCpu(view, offsets.data(), kept.data()), KernelStatus::kOk);
  const size_t tb = g.token_bytes();
  for (uint32_t h = 0; h < heads; ++h) {
    for (uint32_t i = offsets[h]; i < offsets[h + 1]; ++i) {
      const uint32_t to = i - offsets[h], from = kept[i];
      const size_t src_k = (from / page_tokens) * g.page_bytes() + g.k_offset(h, from % page_tokens);
      const size_t src_v = (from / page_tokens) * g.page_bytes() + g.v_offset(h, from % page_tokens);
      ASSERT_TRUE(std::equal(view.k(h, to), view.k(h, to) + tb, before.begin() + src_k));
      ASSERT_TRUE(std::equal(view.v(h, to), view.v(h, to) + tb, before.begin() + src_v));
    }
  }
  const uint32_t bad[2] = {3, 2};  // not ascending
  const uint32_t bad_offsets[2] = {0, 2};
  PagedLayerView one_head{{1, 3, page_tokens, 2}, ptrs.data(), pages};
  EXPECT_EQ(CompactLayerCpu(one_head, bad_offsets, bad), KernelStatus::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(PageSizes, CompactionTest,
                         ::testing::Combine(::testing::Values(1u, 3u, 16u), ::testing::Values(1u, 7u, 32u)),
                         [](const ::testing::TestParamInfo<std::tuple<uint32_t, uint32_t>>& info) {
                           return "pt" + std::to_string(std::get<0>(info.param)) + "_heads" +
                                  std::to_string(std::get<1>(info.param));
                         });

// One head of two: kept {0, 2, 4} of 5 live slots over two word planes (window 40).
TEST(ScissorhandsCompactTest, MovesTheKeptBitsToTheFrontAndZeroesTheRest) {
  const uint32_t stride = 8;
  std::vector<uint32_t> planes(2 * 2 * stride, 0);
  for (uint32_t i = 0; i < planes.size(); ++i) planes[i] = 100 + i;
  const ScissorhandsHistory hist{planes.data(), 40, stride};
  const uint32_t kept[3] = {0, 2, 4};
  ASSERT_EQ(ScissorhandsCompactHeadCpu(hist, 1, kept, 3, 5), KernelStatus::kOk);
  // head 0 untouched
  for (uint32_t i = 0; i < 2 * stride; ++i) EXPECT_EQ(planes[i], 100 + i);
  EXPECT_THAT(std::vector<uint32_t>(hist.plane(1, 0), hist.plane(1, 0) + stride),
              ElementsAreArray({116, 118, 120, 0, 0, 121, 122, 123}));
  EXPECT_THAT(std::vector<uint32_t>(hist.plane(1, 1), hist.plane(1, 1) + stride),
              ElementsAreArray({124, 126, 128, 0, 0, 129, 130, 131}));
  // Kept ids must ascend and lie below the live count.
  const uint32_t unsorted[2] = {2, 1};
  EXPECT_EQ(ScissorhandsCompactHeadCpu(hist, 1, unsorted, 2, 5), KernelStatus::kInvalidArgument);
  const uint32_t past[1] = {5};
  EXPECT_EQ(ScissorhandsCompactHeadCpu(hist, 1, past, 1, 5), KernelStatus::kInvalidArgument);
}

// The fused multi-step record equals recording the steps one by one, across plane words,
// ring wrap-around (messages longer than the window hit a bit twice) and odd live counts.
TEST(ScissorhandsRecordStepsTest, EqualsRecordingEachStepInOrder) {
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  for (uint32_t window : {5u, 7u, 32u, 33u, 100u, 400u}) {
    for (uint32_t num_steps : {1u, 3u, 31u, 77u}) {
      SCOPED_TRACE(::testing::Message() << "window " << window << " steps " << num_steps);
      const uint32_t heads = 3, stride = 90;
      std::vector<uint32_t> offsets = {0};
      for (uint32_t h = 0; h < heads; ++h) offsets.push_back(offsets.back() + stride - rng() % 40);
      const Segments seg{heads, offsets.data()};
      std::vector<uint32_t> one(size_t{heads} * ScissorhandsWords(window) * stride);
      for (uint32_t& w : one) w = rng();
      std::vector<uint32_t> fused = one;
      const uint64_t first = rng() % 1000;
      std::vector<uint32_t> att, lo = {0}, ids;
      for (uint32_t s = 0; s < num_steps; ++s) {
        std::vector<uint32_t> step_att, step_lo = {0}, step_ids;
        for (uint32_t h = 0; h < heads; ++h) {
          step_att.push_back(seg.size(h) - rng() % (seg.size(h) / 3 + 1));
          for (uint32_t j = 0; j < step_att.back(); ++j) {
            if (rng() % 5 == 0) step_ids.push_back(j);
          }
          step_lo.push_back(step_ids.size());
          lo.push_back(ids.size() + step_ids.size());
        }
        ASSERT_EQ(ScissorhandsRecordStepCpu(seg, {one.data(), window, stride}, first + s,
                                            step_att.data(), step_lo.data(), step_ids.data()),
                  KernelStatus::kOk);
        att.insert(att.end(), step_att.begin(), step_att.end());
        ids.insert(ids.end(), step_ids.begin(), step_ids.end());
      }
      const std::vector<ListedIds> listed = testing::ListedIdsOf(ids, lo);
      ASSERT_EQ(ScissorhandsRecordStepsCpu(seg, {fused.data(), window, stride}, first, num_steps,
                                           att.data(), listed.data()),
                KernelStatus::kOk);
      EXPECT_EQ(fused, one);
    }
  }
}

// A bad step anywhere in the batch is refused before any step is recorded.
TEST(ScissorhandsRecordStepsTest, ABadStepChangesNothing) {
  const uint32_t offsets[2] = {0, 4};
  std::vector<uint32_t> planes(8, 0x5a5a5a5au);
  const std::vector<uint32_t> before = planes;
  const uint32_t ids[2] = {1, 3};
  const ListedIds listed[2] = {{ids, 1}, {ids + 1, 1}};
  const uint32_t att[2] = {4, 3};  // step 1 lists slot 3, past its 3 attended
  EXPECT_EQ(ScissorhandsRecordStepsCpu({1, offsets}, {planes.data(), 16, 8}, 0, 2, att, listed),
            KernelStatus::kInvalidArgument);
  EXPECT_EQ(planes, before);
  const uint32_t over[2] = {4, 5};  // more attended than live
  EXPECT_EQ(ScissorhandsRecordStepsCpu({1, offsets}, {planes.data(), 16, 8}, 0, 2, over, listed),
            KernelStatus::kInvalidArgument);
  EXPECT_EQ(planes, before);
  const ListedIds missing[2] = {{nullptr, 2}, {ids, 0}};  // a count without ids
  EXPECT_EQ(ScissorhandsRecordStepsCpu({1, offsets}, {planes.data(), 16, 8}, 0, 2, att, missing),
            KernelStatus::kInvalidArgument);
  EXPECT_EQ(planes, before);
}

// The record kernel's batch (what the daemon stages for one CUDA launch: messages of 1 to
// 4 steps from sequences of different shapes), applied by the kernel's host twin, leaves
// each history as recording its steps one by one does.
TEST(ScissorhandsRecordBatchTest, EqualsRecordingEachSequencesStepsOneByOne) {
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  testing::RecordBatchCase c(rng);
  std::vector<std::vector<uint32_t>> twins;
  std::vector<uint32_t*> targets;
  for (const auto& q : c.seqs) twins.push_back(q.history);
  for (auto& t : twins) targets.push_back(t.data());
  for (int launch = 0; launch < 40; ++launch) {
    ScissorhandsRecordBatch batch;
    ASSERT_TRUE(c.RandomLaunch(targets, rng, &batch));  // a group per head, each message accepted
    ASSERT_EQ(ScissorhandsRecordBatchCpu(batch), KernelStatus::kOk);
  }
  for (size_t i = 0; i < c.seqs.size(); ++i)
    EXPECT_EQ(twins[i], c.seqs[i].history) << "sequence " << i;
}

// Steps that do not fit their history append nothing (all of them or none).
TEST(ScissorhandsRecordBatchTest, InvalidStepsAppendNothing) {
  std::vector<uint32_t> planes(2 * 8, 0);
  const uint32_t offsets[3] = {0, 4, 12};
  const uint32_t ids[1] = {2};
  const ListedIds listed[4] = {{ids, 1}, {nullptr, 0}, {nullptr, 0}, {nullptr, 0}};
  ScissorhandsRecordBatch batch;
  const uint32_t over_attended[4] = {4, 8, 4, 9};  // step 1, head 1: 9 attended of 8 live
  EXPECT_EQ(AppendScissorhandsRecordSteps({2, offsets}, {planes.data(), 16, 8}, 3, 2, over_attended,
                                          listed, &batch),
            KernelStatus::kInvalidArgument);
  const uint32_t offsets_past_stride[3] = {0, 4, 13}, attended[4] = {4, 8, 4, 8};
  EXPECT_EQ(AppendScissorhandsRecordSteps({2, offsets_past_stride}, {planes.data(), 16, 8}, 3, 2,
                                          attended, listed, &batch),
            KernelStatus::kInvalidArgument);
  EXPECT_EQ(AppendScissorhandsRecordSteps({2, offsets}, {planes.data(), 0, 8}, 3, 2, attended,
                                          listed, &batch),
            KernelStatus::kInvalidArgument);
  const ListedIds no_ids[4] = {{nullptr, 3}, {nullptr, 0}, {nullptr, 0}, {nullptr, 0}};
  EXPECT_EQ(AppendScissorhandsRecordSteps({2, offsets}, {planes.data(), 16, 8}, 3, 2, attended,
                                          no_ids, &batch),
            KernelStatus::kInvalidArgument);
  const uint32_t past[1] = {4};
  const ListedIds id_past_attended[4] = {{past, 1}, {nullptr, 0}, {nullptr, 0}, {nullptr, 0}};
  EXPECT_EQ(AppendScissorhandsRecordSteps({2, offsets}, {planes.data(), 16, 8}, 3, 2, attended,
                                          id_past_attended, &batch),
            KernelStatus::kInvalidArgument);
  EXPECT_TRUE(batch.heads.empty() && batch.group_ends.empty() && batch.ids.empty());
  // Two steps from step 35 (bits 3 and 4 of word 0, window 16): head-major groups.
  ASSERT_EQ(AppendScissorhandsRecordSteps({2, offsets}, {planes.data(), 16, 8}, 35, 2, attended,
                                          listed, &batch),
            KernelStatus::kOk);
  ASSERT_EQ(batch.heads.size(), 4u);
  EXPECT_EQ(batch.group_ends, (std::vector<uint32_t>{2, 4}));
  EXPECT_EQ(batch.heads[0].mask, 1u << 3);
  EXPECT_EQ(batch.heads[1].mask, 1u << 4);
  EXPECT_EQ(batch.heads[2].plane, planes.data() + 8);  // head 1, word 0
  EXPECT_EQ(batch.heads[2].live, 8u);
  EXPECT_EQ(batch.ids, std::vector<uint32_t>{2});
  EXPECT_EQ(batch.heads[0].listed_end, 1u);
}

// The CPU selection is a histogram now (as on the GPU); it must equal the plain rule:
// stable-sort the candidates by low count, descending, and evict the first `evict`.
TEST(ScissorhandsSelectTest, HistogramSelectionEqualsAStableSortOnRandomHistories) {
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  for (int round = 0; round < 200; ++round) {
    const uint32_t window = 1 + rng() % 70, n = 5 + rng() % 300;
    ScissorhandsParams p{0, window, static_cast<uint32_t>(rng() % 4), static_cast<uint32_t>(rng() % 7),
                         static_cast<uint32_t>(rng() % 3)};
    p.budget = p.recent + p.sinks + 1 + rng() % n;
    const uint32_t words = ScissorhandsWords(window);
    std::vector<uint32_t> planes(size_t{words} * n);
    for (uint32_t w = 0; w < words; ++w) {
      const uint32_t bits = w + 1 < words || window % 32 == 0 ? 32 : window % 32;
      for (uint32_t j = 0; j < n; ++j) {
        planes[size_t{w} * n + j] = (rng() % 4 == 0 ? rng() : rng() & rng()) & (bits == 32 ? ~0u : (1u << bits) - 1);
      }
    }
    const uint32_t offsets[2] = {0, n};
    std::vector<uint8_t> keep(n);
    std::vector<uint32_t> low(n);
    ASSERT_EQ(ScissorhandsSelectCpu({1, offsets}, {planes.data(), window, n}, p, keep.data(), low.data()),
              KernelStatus::kOk);
    std::vector<uint8_t> want(n, 1);
    const uint32_t evict = ScissorhandsEvictCount(n, p);
    if (evict > 0) {
      std::vector<uint32_t> order;
      for (uint32_t j = p.sinks; j < n - p.recent; ++j) order.push_back(j);
      std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return low[a] > low[b]; });
      for (uint32_t i = 0; i < evict; ++i) want[order[i]] = 0;
    }
    ASSERT_EQ(keep, want) << "round " << round << " n " << n << " window " << window << " budget " << p.budget;
  }
}

// The CPU scorer's fast path (top_p = omega, four windows per AVX2 step) equals the shared
// per-window WindowKvScore (what the CUDA kernel runs) bit for bit, values spread over
// many binades so that any change in the order of additions shows.
TEST(WindowKvScoreTest, FastPathEqualsThePerWindowScoreExactly) {
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  for (int round = 0; round < 200; ++round) {
    const uint32_t heads = 1 + rng() % 9, omega = 1 + rng() % 33, alpha = rng() % 5;
    const uint32_t n = alpha + 1 + rng() % 900;
    const uint32_t candidates = n - alpha;
    std::vector<float> t(size_t{heads} * candidates);
    for (float& x : t) {
      x = std::ldexp(std::uniform_real_distribution<float>(0, 1)(rng), -static_cast<int>(rng() % 60));
    }
    WindowKvParams p{alpha, omega, omega, alpha + 1};
    std::vector<double> scores(WindowKvNumWindows(candidates, omega));
    ASSERT_EQ(WindowKvScoreCpu(t.data(), heads, n, p, scores.data()), KernelStatus::kOk);
    for (uint32_t k = 0; k < scores.size(); ++k) {
      ASSERT_EQ(scores[k], WindowKvScore(t.data(), heads, candidates, k, omega, omega))
          << "round " << round << " window " << k;
    }
  }
}

// The selection (linear) drops exactly the windows that dropping in sorted (score, index)
// order until the rest fit would: with ties, a short last window and every budget.
TEST(WindowKvSelectTest, EqualsDroppingInSortedOrder) {
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  for (int round = 0; round < 3000; ++round) {
    const uint32_t omega = 1 + rng() % 16, alpha = rng() % 5, n = alpha + 1 + rng() % 200;
    const uint32_t candidates = n - alpha, windows = WindowKvNumWindows(candidates, omega);
    WindowKvParams p{alpha, omega, omega, alpha + 1 + static_cast<uint32_t>(rng() % (candidates + 8))};
    std::vector<double> scores(windows);
    for (double& x : scores) x = (rng() % 5) / 4.0;  // few values: many ties
    std::vector<uint8_t> keep(n);
    ASSERT_EQ(WindowKvSelectCpu(scores.data(), n, p, keep.data()), KernelStatus::kOk);
    std::vector<uint32_t> order(windows);
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return scores[a] < scores[b]; });
    std::vector<uint8_t> want(n, 1);
    uint32_t kept = candidates;
    for (uint32_t k : order) {
      if (kept <= p.budget - alpha) break;
      const uint32_t first = k * omega, len = std::min(omega, candidates - first);
      std::fill(want.begin() + first, want.begin() + first + len, 0);
      kept -= len;
    }
    ASSERT_EQ(keep, want) << "round " << round << " n " << n << " omega " << omega << " budget " << p.budget;
  }
}

}  // namespace
}  // namespace kvwarden::kernels
