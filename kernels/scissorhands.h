#pragma once

// Scissorhands (Liu et al., NeurIPS 2023): budgeted eviction by persistence of
// importance. See shared/POLICIES.md.
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
  uint32_t budget = 0;  // B: slots kept per (layer, head)
  uint32_t window = 400;  // w: decode steps counted
  uint32_t recent = 10;   // r: newest slots never evicted
  uint32_t drop = 0;      // m: slots evicted per compression (B / 2 when 0)
  uint32_t sinks = 0;     // oldest slots never evicted; recent + sinks < budget
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

// One head of a decode step for the CUDA record kernel. A launch takes any number of
// them from any number of sequences, each with its own history, so concurrent steps of
// many sequences of one pool share one launch; the kernel does for each what
// ScissorhandsRecordStepCpu does for one head (the reference it is tested against).
struct ScissorhandsRecordHead {
  uint32_t* plane = nullptr;  // the step's word plane of the head in its history
  uint32_t mask = 0;          // the step's bit in that word
  uint32_t live = 0;          // the head's slots
  uint32_t attended = 0;      // of which the first `attended` existed at the step
  uint32_t listed_begin = 0;  // its ids: listed_ids[listed_begin .. listed_end)
  uint32_t listed_end = 0;
};
// Appends the heads of one sequence's step (the arguments of ScissorhandsRecordStepCpu,
// host arrays) to *out, their listed ranges shifted by ids_base. Host-side: `history`
// may point to device memory, it is not dereferenced. Invalid: attended > live, live >
// stride or a zero window.
KernelStatus AppendScissorhandsRecordHeads(Segments slots, ScissorhandsHistory history,
                                           uint64_t step, const uint32_t* attended,
                                           const uint32_t* listed_offsets, uint32_t ids_base,
                                           std::vector<ScissorhandsRecordHead>* out);
// The record kernel's host twin over the same descriptors (host memory): for tests of
// the descriptors against ScissorhandsRecordStepCpu, and of the CUDA kernel against it.
KernelStatus ScissorhandsRecordHeadsCpu(const ScissorhandsRecordHead* heads, uint32_t num_heads,
                                        const uint32_t* listed_ids);
// `heads` and `listed_ids` in device memory. Ids at or past a head's attended count are
// ignored (callers validate them first).
KernelStatus ScissorhandsRecordHeadsCuda(const ScissorhandsRecordHead* heads, uint32_t num_heads,
                                         const uint32_t* listed_ids, void* stream);

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
KernelStatus ScissorhandsCompactHeadCpu(ScissorhandsHistory history, uint32_t head, const uint32_t* kept,
                                        uint32_t k, uint32_t old_live);
// `scratch`: device memory of words() * k entries; `kept` in device memory.
KernelStatus ScissorhandsCompactHeadCuda(ScissorhandsHistory history, uint32_t head, const uint32_t* kept,
                                         uint32_t k, uint32_t old_live, uint32_t* scratch, void* stream);

}  // namespace kvwarden::kernels
