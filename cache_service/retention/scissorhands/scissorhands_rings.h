#pragma once

// The Scissorhands history of one sequence, kept in its pool's memory so the record,
// select and compaction kernels run next to the pages: host memory and the CPU kernels
// for a cpu pool, device memory and the CUDA kernels on the pool's queue for a cuda:N
// pool (NewScissorhandsRings). Both give the same bits and the same selections.
//
// Layout: for every (layer, head) lh = layer * num_kv_heads + head, ScissorhandsWords(
// window) planes of stride() slots, [lh][word][slot] (kernels/scissorhands.h). Slots at
// or past a head's live count are zero. Not thread-safe: owned by one Sequence, used
// under its mutex.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache_service/core/memory/pool_device.h"
#include "cache_service/core/sequences/retention_state.h"
#include "kernels/scissorhands.h"

namespace kvwarden {

class ScissorhandsRings {
 public:
  virtual ~ScissorhandsRings() = default;
  virtual absl::StatusOr<std::unique_ptr<ScissorhandsRings>> Clone() const = 0;

  uint32_t stride() const { return stride_; }
  // Every head's planes hold at least `slots` slots (grown by doubling, bits kept).
  virtual absl::Status Reserve(uint32_t slots) = 0;
  // Decode steps first_step .. first_step + num_steps - 1 for every head, which holds
  // live[lh] slots throughout. Step s: the first attended[s * heads + lh] slots existed;
  // the ids listed[s * heads + lh] (each below that attended count; memory the caller
  // keeps until Record returns) had attention at or above the threshold. Validated by
  // the caller. Equal to recording the steps one by one, in order.
  virtual absl::Status Record(uint64_t first_step, uint32_t num_steps,
                              const std::vector<uint32_t>& live,
                              const std::vector<uint32_t>& attended,
                              const std::vector<kernels::ListedIds>& listed) = 0;
  // Keep masks for heads [first_lh, first_lh + live.size()) holding live[i] slots,
  // packed head after head into *keep (one launch for the heads of a layer).
  virtual absl::Status Select(uint32_t first_lh, const std::vector<uint32_t>& live,
                              const kernels::ScissorhandsParams& p, std::vector<uint8_t>* keep) = 0;
  // Every listed head's history follows its compaction (on a device: all launches
  // queued, one synchronisation).
  virtual absl::Status Compact(const std::vector<HeadCompaction>& heads) = 0;
  // Low-attention counts of head lh's first `live` slots (for operators).
  virtual absl::Status LowCounts(uint32_t lh, uint32_t live, std::vector<uint32_t>* counts) const = 0;
  // Every plane as host words, [lh][word][stride()] (the state written out).
  virtual absl::Status ReadPlanes(std::vector<uint32_t>* planes) const = 0;
  // Sets every plane from `planes`, laid out [lh][word][src_stride]; requires
  // stride() >= src_stride (Reserve first) and planes.size() == heads * words * src_stride.
  virtual absl::Status WritePlanes(uint32_t src_stride, const std::vector<uint32_t>& planes) = 0;

  size_t heads() const { return heads_; }
  uint32_t window() const { return window_; }

 protected:
  ScissorhandsRings(size_t heads, uint32_t window) : heads_(heads), window_(window) {}
  // The stride Reserve grows to.
  uint32_t GrownStride(uint32_t slots) const {
    return std::max({slots, 2 * stride_, 64u});
  }
  // Segments offsets for heads holding sizes[i] slots: [0, s0, s0 + s1, ...].
  static std::vector<uint32_t> SegmentOffsets(const std::vector<uint32_t>& sizes) {
    std::vector<uint32_t> offsets(sizes.size() + 1, 0);
    for (size_t i = 0; i < sizes.size(); ++i) offsets[i + 1] = offsets[i] + sizes[i];
    return offsets;
  }
  size_t words_per_head(uint32_t stride) const { return size_t{kernels::ScissorhandsWords(window_)} * stride; }

  size_t heads_ = 0;
  uint32_t window_ = 0;
  uint32_t stride_ = 0;
};

// Host memory, CPU kernels.
std::unique_ptr<ScissorhandsRings> NewCpuScissorhandsRings(size_t heads, uint32_t window);
// In `device`'s memory: host memory and CPU kernels for a host pool, device memory and
// CUDA kernels on the device's queue otherwise (every ring of one device records
// through one batcher, kept as the device's PolicyLocal).
absl::StatusOr<std::unique_ptr<ScissorhandsRings>> NewScissorhandsRings(PoolDevice& device, size_t heads,
                                                                        uint32_t window);

}  // namespace kvwarden
