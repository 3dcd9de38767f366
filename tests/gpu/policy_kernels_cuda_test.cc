// CUDA retention kernels: the hand-worked examples bit-exact, and exact index equality
// with the CPU references on random inputs (printed gtest seed) over odd sizes.
// Label gpu: skips without a device.

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/compaction.h"
#include "kernels/copy_kv.h"
#include "kernels/h2o.h"
#include "kernels/scissorhands.h"
#include "kernels/streaming.h"
#include "kernels/windowkv.h"
#include "tests/gpu/device_buffer.h"
#include "tests/support/policy_examples.h"

namespace kvwarden::kernels {
namespace {

using testing::DeviceBuffer;

// A record batch through the CUDA kernel (its arrays copied to the device), synchronised.
KernelStatus RecordBatchOnDevice(const ScissorhandsRecordBatch& batch) {
  DeviceBuffer<ScissorhandsRecordHead> d_heads(batch.heads);
  DeviceBuffer<uint32_t> d_groups(batch.group_ends), d_ids(batch.ids);
  const KernelStatus k = ScissorhandsRecordBatchCuda(d_heads.get(), d_groups.get(),
                                                     static_cast<uint32_t>(batch.group_ends.size()),
                                                     d_ids.get(), nullptr);
  cudaDeviceSynchronize();
  return k;
}

// One sequence's step through the CUDA record kernel, its batch built on the host as the
// daemon builds it. `lo` indexes `ids` (ScissorhandsRecordStepCpu's arguments).
KernelStatus RecordStepOnDevice(const std::vector<uint32_t>& offsets, ScissorhandsHistory gpu_hist,
                                uint64_t step, const std::vector<uint32_t>& att,
                                const std::vector<uint32_t>& lo, const std::vector<uint32_t>& ids) {
  const Segments seg{static_cast<uint32_t>(offsets.size() - 1), offsets.data()};
  const std::vector<ListedIds> listed = testing::ListedIdsOf(ids, lo);
  ScissorhandsRecordBatch batch;
  if (KernelStatus k =
          AppendScissorhandsRecordSteps(seg, gpu_hist, step, 1, att.data(), listed.data(), &batch);
      k != KernelStatus::kOk) {
    return k;
  }
  return RecordBatchOnDevice(batch);
}

class PolicyCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  }
  std::mt19937 rng_{static_cast<uint32_t>(::testing::UnitTest::GetInstance()->random_seed())};
};

TEST_F(PolicyCudaTest, ScissorhandsExample) {
  auto ex = testing::MakeScissorhandsExample();
  const std::vector<uint32_t> offsets = {0, ex.n};
  DeviceBuffer<uint32_t> d_offsets(offsets), history(ex.n * ScissorhandsWords(ex.params.window));
  const ScissorhandsHistory hist{history.get(), ex.params.window, ex.n};
  for (const auto& step : ex.steps) {
    ASSERT_EQ(RecordStepOnDevice(offsets, hist, step.step, {step.attended},
                                 {0, static_cast<uint32_t>(step.listed.size())}, step.listed),
              KernelStatus::kOk);
  }
  DeviceBuffer<uint8_t> keep(ex.n);
  DeviceBuffer<uint32_t> low(ex.n);
  ASSERT_EQ(
      ScissorhandsSelectCuda({1, d_offsets.get()}, hist, ex.params, keep.get(), low.get(), nullptr),
      KernelStatus::kOk);
  EXPECT_THAT(low.ToHost(), ::testing::ElementsAre(0, 3, 0, 3, 2, 1, 0));
  EXPECT_THAT(keep.ToHost(), ::testing::ElementsAre(1, 0, 1, 0, 0, 1, 1));
}

TEST_F(PolicyCudaTest, WindowKvExample) {
  auto ex = testing::MakeWindowKvExample();
  DeviceBuffer<float> t(ex.t);
  for (uint32_t top_p : {4u, 2u}) {
    WindowKvParams p{ex.alpha, ex.omega, top_p, ex.budget};
    DeviceBuffer<double> scores(4);
    DeviceBuffer<uint8_t> keep(ex.n);
    ASSERT_EQ(WindowKvScoreCuda(t.get(), 1, ex.n, p, scores.get(), nullptr), KernelStatus::kOk);
    ASSERT_EQ(WindowKvSelectCuda(scores.get(), ex.n, p, keep.get(), nullptr), KernelStatus::kOk);
    std::vector<double> cpu_scores(4);
    std::vector<uint8_t> cpu_keep(ex.n);
    WindowKvScoreCpu(ex.t.data(), 1, ex.n, p, cpu_scores.data());
    WindowKvSelectCpu(cpu_scores.data(), ex.n, p, cpu_keep.data());
    EXPECT_EQ(scores.ToHost(), cpu_scores) << "top_p " << top_p;
    EXPECT_EQ(keep.ToHost(), cpu_keep) << "top_p " << top_p;
  }
}

TEST_F(PolicyCudaTest, RandomInputsMatchCpuExactly) {
  for (uint32_t heads : {1u, 7u, 32u}) {
    for (int delta : {-1, 0, 37}) {
      SCOPED_TRACE(::testing::Message() << "heads " << heads << " delta " << delta);
      const uint32_t budget = 64;
      std::vector<uint32_t> offsets = {0};
      for (uint32_t h = 0; h < heads; ++h)
        offsets.push_back(offsets.back() + budget + delta + h % 3);
      const Segments cpu_seg{heads, offsets.data()};
      DeviceBuffer<uint32_t> d_offsets(offsets);
      const Segments gpu_seg{heads, d_offsets.get()};
      ScissorhandsParams p{budget, 33, 5, 0, 2};
      const uint32_t words = ScissorhandsWords(p.window);
      const uint32_t stride = budget + delta + 2;
      std::vector<uint32_t> history(size_t{heads} * words * stride, 0);
      DeviceBuffer<uint32_t> d_history(history);
      const ScissorhandsHistory cpu_hist{history.data(), p.window, stride};
      const ScissorhandsHistory gpu_hist{d_history.get(), p.window, stride};
      for (uint64_t step = 0; step < 50; ++step) {
        std::vector<uint32_t> att(heads), lo = {0}, ids;
        for (uint32_t h = 0; h < heads; ++h) {
          att[h] = cpu_seg.size(h) - rng_() % 3;
          for (uint32_t j = 0; j < att[h]; ++j) {
            if (rng_() % 5 == 0) ids.push_back(j);
          }
          lo.push_back(ids.size());
        }
        ScissorhandsRecordStepCpu(cpu_seg, cpu_hist, step, att.data(), lo.data(), ids.data());
        ASSERT_EQ(RecordStepOnDevice(offsets, gpu_hist, step, att, lo, ids), KernelStatus::kOk);
      }
      ASSERT_EQ(d_history.ToHost(), history);
      std::vector<uint8_t> keep(cpu_seg.total());
      std::vector<uint32_t> low(cpu_seg.total());
      ScissorhandsSelectCpu(cpu_seg, cpu_hist, p, keep.data(), low.data());
      DeviceBuffer<uint8_t> d_keep(cpu_seg.total());
      DeviceBuffer<uint32_t> d_low(cpu_seg.total());
      ASSERT_EQ(ScissorhandsSelectCuda(gpu_seg, gpu_hist, p, d_keep.get(), d_low.get(), nullptr),
                KernelStatus::kOk);
      EXPECT_EQ(d_low.ToHost(), low);
      EXPECT_EQ(d_keep.ToHost(), keep);

      std::vector<uint8_t> skeep(cpu_seg.total());
      StreamingSelectCpu(cpu_seg, {budget, 4}, skeep.data());
      DeviceBuffer<uint8_t> d_skeep(cpu_seg.total());
      ASSERT_EQ(StreamingSelectCuda(gpu_seg, {budget, 4}, d_skeep.get(), nullptr),
                KernelStatus::kOk);
      EXPECT_EQ(d_skeep.ToHost(), skeep);

      const uint32_t n = budget * 4 + delta + 8;
      std::vector<float> t(size_t{heads} * (n - 8));
      for (float& x : t) x = std::uniform_real_distribution<float>(0, 1)(rng_);
      WindowKvParams wp{8, 7, 4, budget * 2};
      std::vector<double> scores(WindowKvNumWindows(n - 8, 7));
      std::vector<uint8_t> wkeep(n);
      WindowKvScoreCpu(t.data(), heads, n, wp, scores.data());
      WindowKvSelectCpu(scores.data(), n, wp, wkeep.data());
      DeviceBuffer<float> d_t(t);
      DeviceBuffer<double> d_scores(scores.size());
      DeviceBuffer<uint8_t> d_wkeep(n);
      ASSERT_EQ(WindowKvScoreCuda(d_t.get(), heads, n, wp, d_scores.get(), nullptr),
                KernelStatus::kOk);
      ASSERT_EQ(WindowKvSelectCuda(d_scores.get(), n, wp, d_wkeep.get(), nullptr),
                KernelStatus::kOk);
      EXPECT_EQ(d_scores.ToHost(), scores);
      EXPECT_EQ(d_wkeep.ToHost(), wkeep);
    }
  }
}

// Heads longer than one block's tile (256 slots), with a short window so low counts tie
// by the hundred: the ties at the threshold are ranked across tiles, by age, as the CPU
// ranks them. (The segments above fit in one tile.) With `stale` the words also hold
// bits past the window (a popcount above it): both sides bin it at the window.
TEST_F(PolicyCudaTest, ScissorhandsSelectRanksTiesAcrossTiles) {
  for (const bool stale : {false, true})
  for (uint32_t window : {3u, 40u}) {
    const std::vector<uint32_t> sizes = {300, 1500, 257, 2049, 700};
    std::vector<uint32_t> offsets = {0};
    for (uint32_t s : sizes) offsets.push_back(offsets.back() + s);
    const uint32_t heads = static_cast<uint32_t>(sizes.size()), stride = 2049;
    const ScissorhandsParams p{250, window, 7, 0, 3};
    const uint32_t words = ScissorhandsWords(window);
    std::vector<uint32_t> history(size_t{heads} * words * stride);
    for (size_t i = 0; i < history.size(); ++i) {
      const uint32_t word = static_cast<uint32_t>(i / stride % words),
                     bits = std::min(32u, window - 32 * word);
      history[i] = static_cast<uint32_t>(rng_()) &
                   (stale || bits == 32 ? ~0u : (1u << bits) - 1);  // past the window only if stale
    }
    const Segments cpu_seg{heads, offsets.data()};
    const ScissorhandsHistory cpu_hist{history.data(), window, stride};
    std::vector<uint8_t> keep(cpu_seg.total());
    std::vector<uint32_t> low(cpu_seg.total());
    ScissorhandsSelectCpu(cpu_seg, cpu_hist, p, keep.data(), low.data());
    DeviceBuffer<uint32_t> d_offsets(offsets), d_history(history), d_low(cpu_seg.total());
    DeviceBuffer<uint8_t> d_keep(cpu_seg.total());
    ASSERT_EQ(ScissorhandsSelectCuda({heads, d_offsets.get()}, {d_history.get(), window, stride}, p,
                                     d_keep.get(), d_low.get(), nullptr),
              KernelStatus::kOk);
    EXPECT_EQ(d_low.ToHost(), low) << "window " << window << " stale " << stale;
    EXPECT_EQ(d_keep.ToHost(), keep) << "window " << window << " stale " << stale;
  }
}

// The daemon's batching: messages of 1 to 4 steps from several sequences (own histories,
// windows, strides, head counts) in one launch leave each history as recording its steps
// one by one on the CPU does.
TEST_F(PolicyCudaTest, OneLaunchForManySequencesMatchesEachSequencesCpuRecord) {
  testing::RecordBatchCase c(rng_);
  std::vector<std::unique_ptr<DeviceBuffer<uint32_t>>> d_hist;
  std::vector<uint32_t*> targets;
  for (const auto& q : c.seqs) {
    d_hist.push_back(std::make_unique<DeviceBuffer<uint32_t>>(q.history));
    targets.push_back(d_hist.back()->get());
  }
  for (int launch = 0; launch < 30; ++launch) {
    ScissorhandsRecordBatch batch;
    ASSERT_TRUE(c.RandomLaunch(targets, rng_, &batch));
    ASSERT_EQ(RecordBatchOnDevice(batch), KernelStatus::kOk);
  }
  for (size_t i = 0; i < c.seqs.size(); ++i)
    EXPECT_EQ(d_hist[i]->ToHost(), c.seqs[i].history) << "sequence " << i;
}

// H2O on the device: random multi-step accumulation, selection and compaction over several
// heads give the CPU reference's bits and masks exactly.
TEST_F(PolicyCudaTest, H2oMatchesCpuExactly) {
  for (int round = 0; round < 20; ++round) {
    const uint32_t heads = 1 + rng_() % 5, stride = 16 + rng_() % 300, steps = 1 + rng_() % 4;
    std::vector<uint32_t> live(heads), offsets = {0};
    for (uint32_t& n : live) n = 1 + rng_() % stride;
    std::vector<uint32_t> row_offsets = {0};
    std::vector<float> attention;
    for (uint32_t s = 0; s < steps; ++s) {
      for (uint32_t h = 0; h < heads; ++h) {
        const uint32_t attended = live[h] - rng_() % std::min<uint32_t>(live[h], 3);
        for (uint32_t j = 0; j < attended; ++j) attention.push_back(static_cast<float>(rng_() % 1000) / 997.0f);
        row_offsets.push_back(static_cast<uint32_t>(attention.size()));
      }
    }
    for (uint32_t h = 0; h < heads; ++h) offsets.push_back(offsets.back() + live[h]);
    std::vector<float> cpu(size_t{heads} * stride, 0.0f);
    ASSERT_EQ(H2oAccumulateCpu({cpu.data(), stride}, heads, steps, row_offsets.data(), attention.data()),
              KernelStatus::kOk);
    DeviceBuffer<float> d_rows(std::vector<float>(size_t{heads} * stride, 0.0f));
    DeviceBuffer<uint32_t> d_row_offsets(row_offsets), d_offsets(offsets);
    DeviceBuffer<float> d_attention(attention);
    ASSERT_EQ(H2oAccumulateCuda({d_rows.get(), stride}, heads, steps, d_row_offsets.get(), d_attention.get(), nullptr),
              KernelStatus::kOk);
    EXPECT_EQ(d_rows.ToHost(), cpu) << "round " << round;
    H2oParams p;
    p.budget = std::max<uint32_t>(3, stride / 2);
    p.recent = 1 + static_cast<uint32_t>(rng_() % 2);
    p.drop = static_cast<uint32_t>(rng_() % 5);
    p.sinks = static_cast<uint32_t>(rng_() % 2);
    std::vector<uint8_t> keep_cpu(offsets.back());
    ASSERT_EQ(H2oSelectCpu({heads, offsets.data()}, {cpu.data(), stride}, p, keep_cpu.data()), KernelStatus::kOk);
    DeviceBuffer<uint8_t> d_keep(offsets.back());
    ASSERT_EQ(H2oSelectCuda({heads, d_offsets.get()}, {d_rows.get(), stride}, p, d_keep.get(), nullptr),
              KernelStatus::kOk);
    EXPECT_EQ(d_keep.ToHost(), keep_cpu) << "round " << round;
    // Head 0 follows its compaction on both.
    std::vector<uint32_t> kept;
    for (uint32_t j = 0; j < live[0]; ++j) {
      if (keep_cpu[j]) kept.push_back(j);
    }
    ASSERT_EQ(H2oCompactHeadCpu({cpu.data(), stride}, 0, kept.data(), static_cast<uint32_t>(kept.size()), live[0]),
              KernelStatus::kOk);
    DeviceBuffer<uint32_t> d_kept(kept);
    DeviceBuffer<float> d_scratch(std::max<size_t>(kept.size(), 1));
    ASSERT_EQ(H2oCompactHeadCuda({d_rows.get(), stride}, 0, d_kept.get(), static_cast<uint32_t>(kept.size()), live[0],
                                 d_scratch.get(), nullptr),
              KernelStatus::kOk);
    EXPECT_EQ(d_rows.ToHost(), cpu) << "round " << round;
  }
}

TEST_F(PolicyCudaTest, CompactionMatchesCpu) {
  // head_dim 8 and 64 (16- and 128-byte rows) take the 16-byte moves, 3 (6-byte rows) bytes.
  for (uint32_t pt : {1u, 3u, 16u}) {
    for (uint32_t heads : {1u, 7u, 32u}) {
      for (uint32_t head_dim : {8u, 3u, 64u}) {
        PageGeometry g{heads, head_dim, pt, 2};
        const uint32_t pages = 6;
        std::vector<uint8_t> host(g.page_bytes() * pages);
        for (auto& b : host) b = static_cast<uint8_t>(rng_());
        DeviceBuffer<uint8_t> dev(host);
        std::vector<uint8_t*> hptrs, dptrs;
        for (uint32_t i = 0; i < pages; ++i) {
          hptrs.push_back(host.data() + i * g.page_bytes());
          dptrs.push_back(dev.get() + i * g.page_bytes());
        }
        DeviceBuffer<uint8_t*> d_ptrs(dptrs);
        std::vector<uint32_t> offsets = {0}, kept;
        for (uint32_t h = 0; h < heads; ++h) {
          for (uint32_t j = 0; j < pages * pt; ++j) {
            if (rng_() % 3) kept.push_back(j);
          }
          offsets.push_back(kept.size());
        }
        ASSERT_EQ(CompactLayerCpu({g, hptrs.data(), pages}, offsets.data(), kept.data()),
                  KernelStatus::kOk);
        DeviceBuffer<uint32_t> d_off(offsets), d_kept(kept);
        DeviceBuffer<uint8_t> scratch(2 * kept.size() * g.token_bytes() + 1);
        ASSERT_EQ(CompactLayerCuda({g, d_ptrs.get(), pages}, d_off.get(), d_kept.get(),
                                   static_cast<uint32_t>(kept.size()), scratch.get(), nullptr),
                  KernelStatus::kOk);
        EXPECT_EQ(dev.ToHost(), host)
            << "pt " << pt << " heads " << heads << " head_dim " << head_dim;
      }
    }
  }
}

// History compaction moves the kept slots' bits of one head exactly as the CPU does,
// for every word plane, and zeroes the freed slots.
TEST_F(PolicyCudaTest, HistoryCompactionMatchesCpu) {
  for (uint32_t window : {7u, 33u, 400u}) {
    const uint32_t heads = 5, stride = 300, words = ScissorhandsWords(window);
    std::vector<uint32_t> history(size_t{heads} * words * stride);
    for (uint32_t& w : history) w = rng_();
    DeviceBuffer<uint32_t> d_history(history);
    const uint32_t old_live = 250;
    std::vector<uint32_t> kept;
    for (uint32_t j = 0; j < old_live; ++j) {
      if (rng_() % 3 != 0) kept.push_back(j);
    }
    DeviceBuffer<uint32_t> d_kept(kept), scratch(size_t{words} * kept.size());
    ASSERT_EQ(ScissorhandsCompactHeadCpu({history.data(), window, stride}, 3, kept.data(),
                                         static_cast<uint32_t>(kept.size()), old_live),
              KernelStatus::kOk);
    ASSERT_EQ(ScissorhandsCompactHeadCuda({d_history.get(), window, stride}, 3, d_kept.get(),
                                          static_cast<uint32_t>(kept.size()), old_live,
                                          scratch.get(), nullptr),
              KernelStatus::kOk);
    EXPECT_EQ(d_history.ToHost(), history) << "window " << window;
  }
}

}  // namespace
}  // namespace kvwarden::kernels
