#pragma once

#include "cache_service/core/sequences/retention_strategy.h"

namespace kvwarden {

// WindowKV: once, at the end of prefill, each group of gamma layers keeps the windows
// its heads' observation-window scores rank highest, within the group's budget.
class WindowKvStrategy final : public RetentionStrategy {
 public:
  static const WindowKvStrategy& Get();
  const char* name() const override { return "windowkv"; }
  bool Evicts(RetentionCause cause) const override { return cause == RetentionCause::kStats; }
  absl::Status ApplyStats(Sequence& seq, StatsBatch& batch, bool one_back, RetentionResult* out) const override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);
};

}  // namespace kvwarden
