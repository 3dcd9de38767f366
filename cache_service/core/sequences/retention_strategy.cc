#include "cache_service/core/sequences/retention_strategy.h"

#include "absl/strings/str_format.h"
#include "cache_service/core/sequences/sequence_compaction.h"

namespace kvwarden {
namespace {

class KeepAllStrategy final : public RetentionStrategy {
 public:
  const char* name() const override { return "full"; }
  bool ForkSharesPages() const override { return true; }
};

}  // namespace

const RetentionStrategy& RetentionStrategy::KeepAll() {
  static const KeepAllStrategy strategy;
  return strategy;
}

absl::StatusOr<std::unique_ptr<RetentionState>> RetentionStrategy::NewState(const RetentionPolicy&, size_t,
                                                                            PoolDevice&) const {
  return std::unique_ptr<RetentionState>();
}

absl::StatusOr<std::unique_ptr<RetentionState>> RetentionStrategy::DecodeState(const RetentionPolicy& policy,
                                                                               size_t, PoolDevice&,
                                                                               absl::string_view bytes) const {
  if (!bytes.empty()) {
    return absl::DataLossError(absl::StrFormat("policy %s keeps no state, %d bytes were given", policy.Name(),
                                               bytes.size()));
  }
  return std::unique_ptr<RetentionState>();
}

absl::Status RetentionStrategy::CheckReserve(const Sequence&, uint32_t) const { return absl::OkStatus(); }

uint32_t RetentionStrategy::KeptBefore(const Sequence&, uint32_t live, uint32_t) const { return live; }

void RetentionStrategy::MakeRoom(Sequence&, uint32_t, std::vector<HeadRetention>*) const {}

absl::Status RetentionStrategy::ApplyStats(Sequence& seq, StatsBatch& batch, bool, RetentionResult*) const {
  return RefuseOtherStats(seq, batch, false, false);
}

uint32_t RetentionStrategy::SqueezeFloor(const RetentionPolicy&) const { return 0; }

std::vector<uint32_t> RetentionStrategy::SqueezeKept(Sequence& seq, size_t lh, uint32_t live, uint32_t) const {
  (void)seq, (void)lh;
  std::vector<uint32_t> all(live);
  for (uint32_t j = 0; j < live; ++j) all[j] = j;
  return all;
}

bool RetentionStrategy::Squeeze(Sequence& seq, RetentionResult* out) const {
  const KvLayout& l = seq.layout();
  const uint32_t heads = l.num_kv_heads;
  bool changed = false;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    const uint32_t budget = seq.Budget(layer);
    if (seq.LayerSlots(layer) <= budget) continue;
    std::vector<std::vector<uint32_t>> kept(heads);
    for (uint32_t h = 0; h < heads; ++h) {
      const size_t lh = size_t{layer} * heads + h;
      kept[h] = SqueezeKept(seq, lh, seq.slots[lh].size(), budget);
    }
    CompactLayer(seq, layer, kept, out);
    changed = true;
  }
  return changed;
}

absl::Status RetentionStrategy::RefuseOtherStats(const Sequence& seq, const StatsBatch& batch, bool takes_steps,
                                                 bool takes_window_scores) {
  if (!batch.steps.empty() && !takes_steps) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "steps: sequence %d has policy %s, which takes no decode statistics", seq.id, seq.policy.Name()));
  }
  if (!batch.window_scores.empty() && !takes_window_scores) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "window_scores: sequence %d has policy %s, which takes no window scores", seq.id, seq.policy.Name()));
  }
  return absl::OkStatus();
}

std::vector<uint32_t> KeptSlots(absl::Span<const uint8_t> keep) {
  std::vector<uint32_t> out;
  for (uint32_t j = 0; j < keep.size(); ++j) {
    if (keep[j]) out.push_back(j);
  }
  return out;
}

}  // namespace kvwarden
