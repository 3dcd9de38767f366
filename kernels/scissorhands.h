#pragma once

// Scissorhands (Liu et al., NeurIPS 2023, "Scissorhands: Exploiting the Persistence of
// Importance Hypothesis for LLM KV Cache Compression at Test Time"): budgeted eviction by
// persistence of importance. The algorithm and its worked example: README, "Retention
// policies".
//
// State per live slot: a ring of `window` bits, one per recent decode step, set when the
// slot's attention was low at that step (below threshold_scale / n_t). The low count I[j]
// is the popcount. Slots that did not exist at a step have 0 for it.
//
// Layout (ScissorhandsHistory): per head, ceil(window / 32) word planes of `stride` slots,
// [head][word][slot]. A decode step writes one plane per head (contiguous, 4 bytes per
// slot), not a strided word in every slot's row; appending slots moves nothing.

#include <cstdint>
#include <vector>

#include "kernels/kernel_status.h"
#include "kernels/segments.h"

namespace kvwarden::kernels {

struct ScissorhandsParams {
  // Every field set by the caller; the daemon's defaults are proto/kvwarden/v1/policy.proto's.
  uint32_t budget = 0;  // B: slots kept per (layer, head)
  uint32_t window = 0;  // w: decode steps counted, in [1, kScissorhandsMaxWindow]
  uint32_t recent = 0;  // r: newest slots never evicted
  uint32_t drop = 0;    // m: slots evicted per compression (B / 2 when 0)
  uint32_t sinks = 0;   // oldest slots never evicted; recent + sinks < budget
};

KVW_HOST_DEVICE inline uint32_t ScissorhandsWords(uint32_t window) { return (window + 31) / 32; }

// The selection's histogram bound (shared memory in the CUDA kernel); the CPU takes the same.
inline constexpr uint32_t kScissorhandsMaxWindow = 4096;

// recent + sinks < budget, summed in 64 bits: in 32 they wrap for untrusted values and
// the protected range would then cover less than the slots it is meant to.
KVW_HOST_DEVICE inline bool ScissorhandsProtectedFit(const ScissorhandsParams& p) {
  return uint64_t{p.recent} + p.sinks < p.budget;
}

struct ScissorhandsHistory {
  uint32_t* planes = nullptr;  // [head][word][stride]
  uint32_t window = 0;
  uint32_t stride = 0;  // slots per plane, >= every head's live count

  KVW_HOST_DEVICE uint32_t words() const { return ScissorhandsWords(window); }
  KVW_HOST_DEVICE uint32_t* plane(uint32_t head, uint32_t word) const {
    return planes + (static_cast<size_t>(head) * words() + word) * stride;
  }
};

// How many slots a head with n live slots evicts now (0 when n <= budget).
KVW_HOST_DEVICE inline uint32_t ScissorhandsEvictCount(uint32_t n, ScissorhandsParams p) {
  if (n <= p.budget) return 0;
  const uint32_t m = p.drop == 0 ? p.budget / 2 : p.drop;
  const uint32_t evictable = n - p.recent - p.sinks;
  const uint32_t by_m = m < evictable ? m : evictable;
  return n - p.budget > by_m ? n - p.budget : by_m;
}

KVW_HOST_DEVICE inline uint32_t PopCount32(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __popc(x);
#else
  return static_cast<uint32_t>(__builtin_popcount(x));
#endif
}

// Records one decode step at ring position `step % window`: for head h the first
// attended[h] slots existed; the ones listed in listed_ids[listed_offsets[h] ..
// listed_offsets[h+1]) had attention at or above the threshold, the others were low.
// Listed ids must be < attended[h] (validated by the caller).
KernelStatus ScissorhandsRecordStepCpu(Segments slots, ScissorhandsHistory history, uint64_t step,
                                       const uint32_t* attended, const uint32_t* listed_offsets,
                                       const uint32_t* listed_ids);

// One (step, head)'s listed slot ids, where the caller holds them (no gathering copy).
struct ListedIds {
  const uint32_t* ids = nullptr;
  uint32_t count = 0;
};
// Consecutive decode steps first_step .. first_step + num_steps - 1 at once, equal to
// ScissorhandsRecordStepCpu for each in order: steps whose bits share a plane word (up to
// 32 in a row, fewer than `window`, so all distinct) are applied in one pass over that
// word plane instead of one pass each. Step s of head h: attended[s * heads + h] and
// listed[s * heads + h]. Checked whole before anything changes.
KernelStatus ScissorhandsRecordStepsCpu(Segments slots, ScissorhandsHistory history,
                                        uint64_t first_step, uint32_t num_steps,
                                        const uint32_t* attended, const ListedIds* listed);

// One head of one decode step for the CUDA record kernel: what ScissorhandsRecordStepCpu
// does for that head (the reference it is tested against).
struct ScissorhandsRecordHead {
  uint32_t* plane = nullptr;  // the step's word plane of the head in its history
  uint32_t mask = 0;          // the step's bit in that word
  uint32_t live = 0;          // the head's slots
  uint32_t attended = 0;      // of which the first `attended` existed at the step
  uint32_t listed_begin = 0;  // its ids: ids[listed_begin .. listed_end)
  uint32_t listed_end = 0;
};
// The record kernel's input, built on the host. Descriptors come in groups, one CUDA block
// per group walking its descriptors in order: a group is one head of one sequence with its
// steps, so steps sharing a plane word never run at once, and groups (different planes)
// run in parallel. Steps of many sequences (each with its own history, window and stride)
// and several steps of each go to the device in one launch.
struct ScissorhandsRecordBatch {
  std::vector<ScissorhandsRecordHead> heads;
  std::vector<uint32_t>
      group_ends;             // group g: heads[g > 0 ? group_ends[g - 1] : 0 .. group_ends[g])
  std::vector<uint32_t> ids;  // the listed ranges index this
};
// Appends steps first_step .. first_step + num_steps - 1 of one sequence (the arguments of
// ScissorhandsRecordStepsCpu) to *batch: a group per head, its steps in order, ids gathered.
// Host-side: `history` may point to device memory, it is not dereferenced. All or nothing:
// invalid when attended > live, live > stride, the window is zero, a count has no ids or
// an id is not below its step's attended count.
KernelStatus AppendScissorhandsRecordSteps(Segments slots, ScissorhandsHistory history,
                                           uint64_t first_step, uint32_t num_steps,
                                           const uint32_t* attended, const ListedIds* listed,
                                           ScissorhandsRecordBatch* batch);
// Appends `from` to *to (its descriptors, groups and ids rebased).
void AppendScissorhandsRecordBatch(const ScissorhandsRecordBatch& from,
                                   ScissorhandsRecordBatch* to);
// The record kernel's host twin over a batch in host memory: group by group, in order.
KernelStatus ScissorhandsRecordBatchCpu(const ScissorhandsRecordBatch& batch);
// A batch's arrays in device memory. Ids at or past a head's attended count are ignored
// (callers validate them first).
KernelStatus ScissorhandsRecordBatchCuda(const ScissorhandsRecordHead* heads,
                                         const uint32_t* group_ends, uint32_t num_groups,
                                         const uint32_t* ids, void* stream);

// Marks survivors: keep[i] = 1 or 0 over slots.total(); low_counts (optional, may be
// null) receives I[j] before protection. Heads at or under budget keep everything.
// Eviction: the ScissorhandsEvictCount slots with the largest I among [sinks, n - recent),
// ties to the older slot.
KernelStatus ScissorhandsSelectCpu(Segments slots, ScissorhandsHistory history,
                                   ScissorhandsParams p, uint8_t* keep, uint32_t* low_counts);
// `low_counts` is required here (device scratch of slots.total() entries).
KernelStatus ScissorhandsSelectCuda(Segments slots, ScissorhandsHistory history,
                                    ScissorhandsParams p, uint8_t* keep, uint32_t* low_counts,
                                    void* stream);

// After head `head` kept `kept[0..k)` (ascending) of its `old_live` slots: moves their
// history bits to the front of every plane and zeroes [k, old_live), so the slots a
// head reuses start clean.
KernelStatus ScissorhandsCompactHeadCpu(ScissorhandsHistory history, uint32_t head,
                                        const uint32_t* kept, uint32_t k, uint32_t old_live);
// `scratch`: device memory of words() * k entries; `kept` in device memory.
KernelStatus ScissorhandsCompactHeadCuda(ScissorhandsHistory history, uint32_t head,
                                         const uint32_t* kept, uint32_t k, uint32_t old_live,
                                         uint32_t* scratch, void* stream);

}  // namespace kvwarden::kernels
