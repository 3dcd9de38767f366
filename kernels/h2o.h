#pragma once

// H2O, the Heavy-Hitter Oracle (Zhang et al., NeurIPS 2023, "H2O: Heavy-Hitter Oracle
// for Efficient Generative Inference of Large Language Models"): each slot accumulates
// the attention it receives at every decode step; a head over its budget evicts the
// slots with the smallest accumulated attention, never the `sinks` oldest nor the
// `recent` newest. Evictions come `drop` at a time, as Scissorhands' do (drop = 1 is the
// paper's one-per-step). The README's "Retention policies" has the worked example.
//
// Layout (H2oScores): per head one row of `stride` floats, [head][slot]; slots at or past
// a head's live count are 0. Sums are one float add per step in step order on the CPU and
// on the device, so both give the same bits.

#include <cstdint>

#include "kernels/kernel_status.h"
#include "kernels/segments.h"

namespace kvwarden::kernels {

struct H2oParams {
  // Every field set by the caller; the daemon's defaults are proto/kvwarden/v1/policy.proto's.
  uint32_t budget = 0;  // B: slots kept per (layer, head)
  uint32_t recent = 0;  // newest slots never evicted
  uint32_t drop = 0;    // slots evicted per compression (B / 2 when 0)
  uint32_t sinks = 0;   // oldest slots never evicted; recent + sinks < budget
};

KVW_HOST_DEVICE inline bool H2oProtectedFit(const H2oParams& p) {
  return uint64_t{p.recent} + p.sinks < p.budget;
}

// How many slots a head with n live slots evicts now (0 when n <= budget): `drop`, or
// more when it is further over, never a protected slot.
KVW_HOST_DEVICE inline uint32_t H2oEvictCount(uint32_t n, H2oParams p) {
  if (n <= p.budget) return 0;
  const uint32_t m = p.drop == 0 ? p.budget / 2 : p.drop;
  const uint32_t evictable = n - p.recent - p.sinks;
  const uint32_t by_m = m < evictable ? m : evictable;
  return n - p.budget > by_m ? n - p.budget : by_m;
}

// Whether candidate a (score sa) is evicted before candidate b: smaller sum first, the
// older slot first among equal sums.
KVW_HOST_DEVICE inline bool H2oEvictsBefore(float sa, uint32_t a, float sb, uint32_t b) {
  return sa < sb || (sa == sb && a < b);
}

struct H2oScores {
  float* rows = nullptr;  // [head][stride]
  uint32_t stride = 0;

  KVW_HOST_DEVICE float* row(uint32_t head) const {
    return rows + static_cast<size_t>(head) * stride;
  }
};

// Adds `num_steps` decode steps' attention, in order, to every head's row: for step s and
// head h the values attention[row_offsets[s * heads + h] .. row_offsets[s * heads + h + 1])
// are the attention of slots 0, 1, ... (a prefix of the head's live slots; validated by
// the caller: finite, >= 0, at most stride values).
KernelStatus H2oAccumulateCpu(H2oScores scores, uint32_t heads, uint32_t num_steps,
                              const uint32_t* row_offsets, const float* attention);
// Device pointers; asynchronous on `stream` (a cudaStream_t).
KernelStatus H2oAccumulateCuda(H2oScores scores, uint32_t heads, uint32_t num_steps,
                               const uint32_t* row_offsets, const float* attention, void* stream);

// keep[i] = 1 for kept slots over slots.total() entries; head h of `slots` is row h of
// `scores`.
KernelStatus H2oSelectCpu(Segments slots, H2oScores scores, H2oParams p, uint8_t* keep);
KernelStatus H2oSelectCuda(Segments slots, H2oScores scores, H2oParams p, uint8_t* keep,
                           void* stream);

// Head `head` kept `kept` (ascending, kept_count of its old_live slots): its row follows,
// the rest of the old live range zeroed.
KernelStatus H2oCompactHeadCpu(H2oScores scores, uint32_t head, const uint32_t* kept,
                               uint32_t kept_count, uint32_t old_live);
// `scratch`: kept_count floats of device memory.
KernelStatus H2oCompactHeadCuda(H2oScores scores, uint32_t head, const uint32_t* kept,
                                uint32_t kept_count, uint32_t old_live, float* scratch,
                                void* stream);

}  // namespace kvwarden::kernels
