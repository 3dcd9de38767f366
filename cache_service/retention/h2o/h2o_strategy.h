#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cache_service/core/sequences/retention_strategy.h"
#include "cache_service/retention/h2o/h2o_policy.h"
#include "cache_service/retention/h2o/h2o_scores.h"

namespace kvwarden {

// The sequence's accumulated attention (in its pool's memory) and the decode steps counted.
class H2oState final : public RetentionState {
 public:
  explicit H2oState(std::unique_ptr<H2oScoreRows> rows) : rows_(std::move(rows)) {}

  absl::StatusOr<std::unique_ptr<RetentionState>> Clone() const override;
  absl::Status Reserve(uint32_t slots) override { return rows_->Reserve(slots); }
  void Compacted(const std::vector<HeadCompaction>& heads) override;
  uint64_t decode_steps() const override { return decode_steps_; }
  // score_max, score_mean: the largest and mean accumulated attention over a head's live
  // slots.
  std::vector<std::vector<HeadFigure>> Describe(const std::vector<uint32_t>& live) const override;
  // "H2OS" v1: heads, decode steps, stride, then every row's float bits.
  absl::StatusOr<std::string> Encode() const override;

  H2oScoreRows& rows() { return *rows_; }
  void CountSteps(uint64_t n) { decode_steps_ += n; }

 private:
  std::unique_ptr<H2oScoreRows> rows_;
  uint64_t decode_steps_ = 0;
};

// H2O: dense decode-step attention accumulated per slot; a layer whose heads hold more
// than its budget evicts the smallest sums (sinks and the recent window protected).
// Statistics one epoch back are remapped through the last compaction.
class H2oStrategy final : public RetentionStrategy {
 public:
  static const H2oStrategy& Get();
  const char* name() const override { return "h2o"; }
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
    const kernels::H2oParams& p = policy.Params<H2oPolicyParams>().kernel;
    return p.recent + p.sinks + 1;
  }

 protected:
  std::vector<uint32_t> SqueezeKept(Sequence& seq, size_t lh, uint32_t live,
                                    uint32_t budget) const override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);
};

}  // namespace kvwarden
