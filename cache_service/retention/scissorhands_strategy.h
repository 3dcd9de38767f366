#pragma once

#include <vector>

#include "cache_service/retention/retention_strategy.h"
#include "kernels/scissorhands.h"

namespace kvwarden {

// Per head, the low-attention step rings of its slots: ScissorhandsWords(window) planes
// of `stride` slots (see kernels/scissorhands.h); slots at or past the head's live
// count are zero. Grows by doubling so appends stay O(1).
class ScissorhandsState final : public RetentionState {
 public:
  ScissorhandsState(uint32_t window, size_t head_count) : window_(window), history_(head_count) {}

  std::unique_ptr<RetentionState> Clone() const override { return std::make_unique<ScissorhandsState>(*this); }
  void Appended(size_t lh, uint32_t live) override;
  void Compacted(size_t lh, const std::vector<uint32_t>& kept, uint32_t old_live) override;
  void Describe(size_t lh, uint32_t live, uint32_t* low_max, double* low_mean) const override;
  uint64_t decode_steps() const override { return decode_steps_; }

  kernels::ScissorhandsHistory History(size_t lh) { return {history_[lh].data(), window_, stride_}; }
  void CountStep() { ++decode_steps_; }

 private:
  uint32_t window_ = 0;
  std::vector<std::vector<uint32_t>> history_;  // [layer * heads + head]
  uint32_t stride_ = 0;
  uint64_t decode_steps_ = 0;
};

// Scissorhands: decode statistics recorded per step; a layer whose heads hold more than
// its budget evicts by low-attention count (sinks and the recent window protected).
// Statistics one epoch back are remapped through the last compaction.
class ScissorhandsStrategy final : public RetentionStrategy {
 public:
  std::unique_ptr<RetentionState> NewState(const RetentionPolicy& policy, size_t head_count) const override;
  absl::Status ApplyStats(Sequence& seq, StatsBatch& batch, bool one_back, RetentionResult* out) const override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);
  bool Squeezable() const override { return true; }
  uint32_t SqueezeFloor(const RetentionPolicy& policy) const override {
    return policy.scissorhands.recent + policy.scissorhands.sinks + 1;
  }

 protected:
  std::vector<uint32_t> SqueezeKept(Sequence& seq, size_t lh, uint32_t live, uint32_t budget) const override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);
};

}  // namespace kvwarden
