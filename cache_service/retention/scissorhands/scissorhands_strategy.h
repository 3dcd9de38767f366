#pragma once

#include <vector>

#include "cache_service/core/sequences/retention_strategy.h"
#include "cache_service/retention/scissorhands/scissorhands_policy.h"
#include "cache_service/retention/scissorhands/scissorhands_rings.h"
#include "kernels/scissorhands.h"

namespace kvwarden {

// The sequence's history rings (in its pool's memory, see scissorhands_rings.h) and
// the decode steps counted.
class ScissorhandsState final : public RetentionState {
 public:
  explicit ScissorhandsState(std::unique_ptr<ScissorhandsRings> rings) : rings_(std::move(rings)) {}

  absl::StatusOr<std::unique_ptr<RetentionState>> Clone() const override;
  absl::Status Reserve(uint32_t slots) override { return rings_->Reserve(slots); }
  void Compacted(const std::vector<HeadCompaction>& heads) override;
  // low_max, low_mean: the largest and mean low-attention count over a head's live slots.
  std::vector<std::vector<HeadFigure>> Describe(const std::vector<uint32_t>& live) const override;
  uint64_t decode_steps() const override { return decode_steps_; }
  // "SHRS" v1: heads, window, decode steps, stride, then every plane.
  absl::StatusOr<std::string> Encode() const override;

  ScissorhandsRings& rings() { return *rings_; }
  void CountSteps(uint64_t n) { decode_steps_ += n; }

 private:
  std::unique_ptr<ScissorhandsRings> rings_;
  uint64_t decode_steps_ = 0;
};

// Scissorhands: decode statistics recorded per step; a layer whose heads hold more than
// its budget evicts by low-attention count (sinks and the recent window protected).
// Statistics one epoch back are remapped through the last compaction.
class ScissorhandsStrategy final : public RetentionStrategy {
 public:
  static const ScissorhandsStrategy& Get();
  const char* name() const override { return "scissorhands"; }
  bool Evicts(RetentionCause cause) const override {
    return cause == RetentionCause::kStats || cause == RetentionCause::kPressure;
  }
  absl::StatusOr<std::unique_ptr<RetentionState>> NewState(const RetentionPolicy& policy,
                                                           size_t head_count,
                                                           PoolDevice& device) const override;
  absl::StatusOr<std::unique_ptr<RetentionState>> DecodeState(
      const RetentionPolicy& policy, size_t head_count, PoolDevice& device,
      absl::string_view bytes) const override;
  absl::Status ApplyStats(Sequence& seq, StatsBatch& batch, bool one_back,
                          RetentionResult* out) const override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);
  bool Squeezable() const override { return true; }
  uint32_t SqueezeFloor(const RetentionPolicy& policy) const override {
    const kernels::ScissorhandsParams& p = policy.Params<ScissorhandsPolicyParams>().kernel;
    return p.recent + p.sinks + 1;
  }

 protected:
  std::vector<uint32_t> SqueezeKept(Sequence& seq, size_t lh, uint32_t live,
                                    uint32_t budget) const override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);
};

}  // namespace kvwarden
