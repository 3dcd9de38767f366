#pragma once

// The hand-worked examples of shared/POLICIES.md as data, shared by the CPU, CUDA and
// end-to-end tests so every implementation reproduces the same numbers.

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/h2o.h"
#include "kernels/scissorhands.h"

namespace kvwarden::testing {

struct ScissorhandsStep {
  uint64_t step;
  uint32_t attended;             // slots alive at the step
  std::vector<double> row;       // attention row
  std::vector<uint32_t> listed;  // slots at or above 1/attended
};

struct ScissorhandsExample {
  kernels::ScissorhandsParams params;
  uint32_t n;
  std::vector<ScissorhandsStep> steps;
};

// B=6, r=2, w=3, m=3; 7 live slots (tokens 1..7) after step 7.
inline ScissorhandsExample MakeScissorhandsExample() {
  ScissorhandsExample ex;
  ex.params = kernels::ScissorhandsParams{6, 3, 2, 3, 0};
  ex.n = 7;
  ex.steps = {
      {5, 5, {.40, .05, .30, .05, .20}, {0, 2, 4}},
      {6, 6, {.35, .05, .25, .05, .10, .20}, {0, 2, 5}},
      {7, 7, {.30, .04, .20, .06, .10, .10, .20}, {0, 2, 6}},
  };
  return ex;
}

// Slots whose attention is at or above scale / row length (not strictly below it).
inline std::vector<uint32_t> AboveThreshold(const std::vector<double>& row, double scale) {
  std::vector<uint32_t> out;
  for (uint32_t j = 0; j < row.size(); ++j) {
    if (!(row[j] < scale / row.size())) out.push_back(j);
  }
  return out;
}

struct WindowKvExample {
  uint32_t n = 20, alpha = 4, omega = 4, budget = 12;  // b = budget - alpha = 8
  std::vector<float> t;  // one head, 16 candidates
};

inline WindowKvExample MakeWindowKvExample() {
  WindowKvExample ex;
  ex.t = {.9f, .1f, .1f, .1f, .35f, .3f, .3f, .3f, .05f, .05f, .05f, .05f, .6f, .5f, 0.f, 0.f};
  return ex;
}

// Views of flat listed ids: entry k is ids[offsets[k] .. offsets[k + 1]) (the
// ScissorhandsRecordStepCpu layout, as ScissorhandsRecordStepsCpu and the rings take it).
inline std::vector<kernels::ListedIds> ListedIdsOf(const std::vector<uint32_t>& ids,
                                                   const std::vector<uint32_t>& offsets) {
  std::vector<kernels::ListedIds> out;
  for (size_t k = 0; k + 1 < offsets.size(); ++k) {
    out.push_back({ids.data() + offsets[k], offsets[k + 1] - offsets[k]});
  }
  return out;
}

// Sequences of different shapes (heads, window, stride, live counts per head) with
// random histories, and random stats messages of one or more decode steps for them: the
// batched record kernel's cases (CPU twin and CUDA), where one launch covers several
// steps of each of them.
// H2O's hand-worked example (README, "Retention policies"): one head, B = 4, r = 1,
// m = 2, no sinks. Attention values are exact binary fractions, so every sum is exact.
// Step k: `reserve` new tokens, then one decode step over all live slots with `row`.
//   step 1: slots = positions 0..4;      sums .375 .125 .25 .0625 .1875 -> evict 3, 1
//   step 2: positions 0 2 4 5 6;         sums .5 .375 .25 .1875 .5      -> evict 5, 4
//   step 3: positions 0 2 6 7 8;         sums .5 .5 .5 .25 .625          -> evict 7, then 0
//           (a tie among equal sums goes to the oldest slot)
struct H2oStep {
  uint32_t reserve;
  std::vector<float> row;
  std::vector<uint32_t> evicted_positions;
  std::vector<uint32_t> kept_positions;
};
struct H2oExample {
  kernels::H2oParams params{4, 1, 2, 0};
  std::vector<H2oStep> steps;
};
inline H2oExample MakeH2oExample() {
  H2oExample ex;
  ex.steps = {
      {5, {0.375f, 0.125f, 0.25f, 0.0625f, 0.1875f}, {1, 3}, {0, 2, 4}},
      {2, {0.125f, 0.125f, 0.0625f, 0.1875f, 0.5f}, {4, 5}, {0, 2, 6}},
      {2, {0.0f, 0.125f, 0.0f, 0.25f, 0.625f}, {0, 7}, {2, 6, 8}},
  };
  return ex;
}

struct RecordBatchCase {
  struct Seq {
    uint32_t heads, window, stride;
    std::vector<uint32_t> offsets{0}, history;
    uint64_t next_step = 0;
    kernels::Segments segments() const { return {heads, offsets.data()}; }
  };
  // Steps [step][head]: attended counts, listed ids (flat, offsets into them).
  struct Message {
    uint32_t steps = 0;
    std::vector<uint32_t> attended, listed_offsets{0}, ids;
    std::vector<kernels::ListedIds> listed() const { return ListedIdsOf(ids, listed_offsets); }
  };
  std::vector<Seq> seqs = {{1, 7, 40}, {5, 33, 64}, {3, 400, 100}, {8, 64, 17}};

  explicit RecordBatchCase(std::mt19937& rng) {
    for (Seq& q : seqs) {
      for (uint32_t h = 0; h < q.heads; ++h)
        q.offsets.push_back(q.offsets.back() + q.stride - (rng() % q.stride) / 2);
      q.history.resize(size_t{q.heads} * kernels::ScissorhandsWords(q.window) * q.stride);
      for (uint32_t& w : q.history) w = rng();
    }
  }
  // `steps` steps for sequence i: most slots attended, about a quarter of those listed.
  Message RandomMessage(size_t i, uint32_t steps, std::mt19937& rng) const {
    const kernels::Segments seg = seqs[i].segments();
    Message m;
    m.steps = steps;
    for (uint32_t s = 0; s < steps; ++s) {
      for (uint32_t h = 0; h < seg.num_heads; ++h) {
        m.attended.push_back(seg.size(h) - rng() % (seg.size(h) / 4 + 1));
        for (uint32_t j = 0; j < m.attended.back(); ++j) {
          if (rng() % 4 == 0) m.ids.push_back(j);
        }
        m.listed_offsets.push_back(static_cast<uint32_t>(m.ids.size()));
      }
    }
    return m;
  }
  // Records `m` into sequence i's host history one step at a time (the reference) and
  // advances its step counter; returns the message's first step.
  uint64_t RecordOneByOne(size_t i, const Message& m) {
    Seq& q = seqs[i];
    const uint64_t first = q.next_step;
    for (uint32_t s = 0; s < m.steps; ++s) {
      kernels::ScissorhandsRecordStepCpu(q.segments(), {q.history.data(), q.window, q.stride},
                                         first + s, m.attended.data() + s * q.heads,
                                         m.listed_offsets.data() + s * q.heads, m.ids.data());
    }
    q.next_step += m.steps;
    return first;
  }
  // One launch's batch: a random message of 1 to 4 steps per sequence, recorded one by one
  // into the host histories (the reference) and appended to *batch over targets[i] (the
  // histories under test, host or device memory). False if a message's steps were refused
  // or did not form one group per head.
  bool RandomLaunch(const std::vector<uint32_t*>& targets, std::mt19937& rng,
                    kernels::ScissorhandsRecordBatch* batch) {
    for (size_t i = 0; i < seqs.size(); ++i) {
      const Message m = RandomMessage(i, 1 + rng() % 4, rng);
      const uint64_t first = RecordOneByOne(i, m);
      const Seq& q = seqs[i];
      kernels::ScissorhandsRecordBatch own;
      if (kernels::AppendScissorhandsRecordSteps(
              q.segments(), {targets[i], q.window, q.stride}, first, m.steps, m.attended.data(),
              m.listed().data(), &own) != kernels::KernelStatus::kOk ||
          own.group_ends.size() != q.heads) {
        return false;
      }
      kernels::AppendScissorhandsRecordBatch(own, batch);
    }
    return true;
  }
};

}  // namespace kvwarden::testing
