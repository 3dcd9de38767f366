#pragma once

// The H2O accumulated attention of one sequence, one row of floats per (layer, head), in
// its pool's memory so accumulation, selection and compaction run next to the pages:
// host memory and the CPU kernels for a cpu pool, device memory and the CUDA kernels on
// the pool's queue for a cuda:N pool. Both give the same bits. Slots at or past a head's
// live count are 0. Not thread-safe: owned by one Sequence, used under its mutex.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache_service/core/memory/pool_device.h"
#include "cache_service/core/sequences/retention_state.h"
#include "kernels/h2o.h"

namespace kvwarden {

class H2oScoreRows {
 public:
  virtual ~H2oScoreRows() = default;
  virtual absl::StatusOr<std::unique_ptr<H2oScoreRows>> Clone() const = 0;

  uint32_t stride() const { return stride_; }
  size_t heads() const { return heads_; }
  // Every row holds at least `slots` slots (grown by doubling, sums kept).
  virtual absl::Status Reserve(uint32_t slots) = 0;
  // H2oAccumulateCpu's contract over every head (row_offsets: num_steps * heads + 1).
  virtual absl::Status Accumulate(uint32_t num_steps, const std::vector<uint32_t>& row_offsets,
                                  const std::vector<float>& attention) = 0;
  // Keep masks for heads [first_lh, first_lh + live.size()), packed head after head.
  virtual absl::Status Select(uint32_t first_lh, const std::vector<uint32_t>& live, const kernels::H2oParams& p,
                              std::vector<uint8_t>* keep) = 0;
  // Every listed head's row follows its compaction.
  virtual absl::Status Compact(const std::vector<HeadCompaction>& heads) = 0;
  // Every row as host floats, [lh][stride()].
  virtual absl::Status ReadRows(std::vector<float>* rows) const = 0;
  // Sets every row from `rows` laid out [lh][src_stride]; requires stride() >= src_stride.
  virtual absl::Status WriteRows(uint32_t src_stride, const std::vector<float>& rows) = 0;

 protected:
  explicit H2oScoreRows(size_t heads) : heads_(heads) {}
  uint32_t GrownStride(uint32_t slots) const { return std::max({slots, 2 * stride_, 64u}); }
  static std::vector<uint32_t> SegmentOffsets(const std::vector<uint32_t>& sizes) {
    std::vector<uint32_t> offsets(sizes.size() + 1, 0);
    for (size_t i = 0; i < sizes.size(); ++i) offsets[i + 1] = offsets[i] + sizes[i];
    return offsets;
  }

  size_t heads_ = 0;
  uint32_t stride_ = 0;
};

// In `device`'s memory (host memory and CPU kernels for a host pool).
absl::StatusOr<std::unique_ptr<H2oScoreRows>> NewH2oScoreRows(PoolDevice& device, size_t heads);
std::unique_ptr<H2oScoreRows> NewCpuH2oScoreRows(size_t heads);

}  // namespace kvwarden
