#include "cache_service/retention/windowkv/windowkv_strategy.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/core/sequences/sequence_compaction.h"
#include "cache_service/retention/windowkv/windowkv_keep.h"
#include "cache_service/retention/windowkv/windowkv_policy.h"
#include "kernels/windowkv.h"

namespace kvwarden {

const WindowKvStrategy& WindowKvStrategy::Get() {
  static const WindowKvStrategy strategy;
  return strategy;
}

absl::Status WindowKvStrategy::ApplyStats(Sequence& seq, StatsBatch& batch, bool one_back,
                                          RetentionResult* out) const {
  if (absl::Status s = RefuseOtherStats(seq, batch, false, true); !s.ok()) return s;
  if (one_back) {  // selection runs on the slots as they are; no remap for scores
    return absl::FailedPreconditionError(absl::StrFormat(
        "epoch: window scores for epoch %d, sequence %d is at epoch %d", batch.epoch, seq.id, seq.epoch));
  }
  const KvLayout& l = seq.layout();
  const uint32_t heads = l.num_kv_heads;
  const WindowKvPolicyParams& w = seq.policy.Params<WindowKvPolicyParams>();
  const std::vector<WindowScoresIn>& scores = batch.window_scores;
  // Validate every entry before applying any.
  for (size_t i = 0; i < scores.size(); ++i) {
    const WindowScoresIn& ws = scores[i];
    const std::string at = absl::StrCat("window_scores[", i, "]");
    if (ws.layer >= l.num_layers || ws.layer % w.gamma != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: layer %u is not a group leader (layers 0, %u, ... below %u)", at, ws.layer, w.gamma, l.num_layers));
    }
    const uint32_t n = seq.slots[size_t{ws.layer} * heads].size();
    for (uint32_t layer = ws.layer; layer < ws.layer + w.gamma; ++layer) {
      for (uint32_t h = 0; h < heads; ++h) {
        if (seq.slots[size_t{layer} * heads + h].size() != n) {
          return absl::FailedPreconditionError(absl::StrFormat(
              "%s: group of layer %u no longer has one length in every head (already selected?)", at, ws.layer));
        }
      }
    }
    if (n <= w.alpha) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s: %u tokens are not more than the observation window alpha %u", at, n, w.alpha));
    }
    const size_t want = size_t{heads} * (n - w.alpha);
    if (ws.sums.size() != want) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: %d sums given, %d expected (%u heads x %u candidates)",
                                                        at, ws.sums.size(), want, heads, n - w.alpha));
    }
    for (float x : ws.sums) {
      if (!std::isfinite(x) || x < 0) {
        return absl::InvalidArgumentError(absl::StrFormat("%s: sum %g is not finite and >= 0", at, x));
      }
    }
  }
  bool changed = false;
  for (const WindowScoresIn& ws : scores) {
    const uint32_t n = seq.slots[size_t{ws.layer} * heads].size();
    kernels::WindowKvParams p{w.alpha, w.omega, w.top_p, w.group_budgets[ws.layer / w.gamma]};
    std::vector<uint8_t> keep;
    if (absl::Status s = WindowKvKeep(seq.pool->device_ops(), ws.sums, heads, n, p, &keep); !s.ok()) return s;
    const std::vector<uint32_t> kept = KeptSlots(keep);
    if (kept.size() == n) continue;
    const std::vector<std::vector<uint32_t>> all_heads(heads, kept);
    for (uint32_t layer = ws.layer; layer < ws.layer + w.gamma; ++layer) {
      CompactLayer(seq, layer, all_heads, out);
    }
    changed = true;
  }
  if (changed) ++seq.epoch;
  return absl::OkStatus();
}

}  // namespace kvwarden
