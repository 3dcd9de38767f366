#include "cache_service/retention/scissorhands_strategy.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/core/log.h"
#include "cache_service/core/sequence_compaction.h"

namespace kvwarden {
namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

ScissorhandsState& StateOf(Sequence& seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu) {
  return static_cast<ScissorhandsState&>(*seq.retention);
}

// Checks one decode step against the sequence as it is now; nothing is changed.
// `live(lh)` is the live count of (layer, head) in the epoch the step refers to.
template <typename LiveCount>
absl::Status ValidateStep(const Sequence& seq, const DecodeStepStats& step, size_t index, LiveCount live_count)
    ABSL_SHARED_LOCKS_REQUIRED(seq.mu) {
  const KvLayout& l = seq.layout();
  std::vector<bool> seen(size_t{l.num_layers} * l.num_kv_heads, false);
  const std::string at = absl::StrCat("steps[", index, "]");
  for (const HeadStepStats& hs : step.heads) {
    if (hs.layer >= l.num_layers || hs.head >= l.num_kv_heads) {
      return Invalid(absl::StrFormat("%s: layer %u head %u is outside the layout (%u layers x %u heads)",
                                     at, hs.layer, hs.head, l.num_layers, l.num_kv_heads));
    }
    const size_t lh = size_t{hs.layer} * l.num_kv_heads + hs.head;
    if (seen[lh]) return Invalid(absl::StrFormat("%s: layer %u head %u appears twice", at, hs.layer, hs.head));
    seen[lh] = true;
    const uint32_t live = live_count(lh);
    if (hs.attended > live) {
      return Invalid(absl::StrFormat("%s: layer %u head %u attended %u slots, it has %u live", at,
                                     hs.layer, hs.head, hs.attended, live));
    }
    if (!hs.dense.empty() && !hs.listed.empty()) {
      return Invalid(absl::StrFormat("%s: layer %u head %u sets both listed and dense", at, hs.layer, hs.head));
    }
    if (!hs.dense.empty() && hs.dense.size() != hs.attended) {
      return Invalid(absl::StrFormat("%s: layer %u head %u: dense row has %d values for %u attended slots",
                                     at, hs.layer, hs.head, hs.dense.size(), hs.attended));
    }
    for (float a : hs.dense) {
      if (!std::isfinite(a) || a < 0) {
        return Invalid(absl::StrFormat("%s: layer %u head %u: attention %g is not a finite value >= 0",
                                       at, hs.layer, hs.head, a));
      }
    }
    for (uint32_t id : hs.listed) {
      if (id >= hs.attended) {
        return absl::OutOfRangeError(absl::StrFormat("%s: layer %u head %u: slot %u is not in [0, %u)",
                                                     at, hs.layer, hs.head, id, hs.attended));
      }
    }
  }
  if (step.heads.size() != seen.size()) {
    return Invalid(absl::StrFormat("%s: covers %d of the %d (layer, head) pairs; a step needs all",
                                   at, step.heads.size(), seen.size()));
  }
  return absl::OkStatus();
}

// Dense mode: turns each full row into the sparse list (attention >= scale / attended), with
// `attended` the slots the worker's step saw, exactly as a worker would before sending.
void ListDenseRows(std::vector<DecodeStepStats>& steps, float threshold_scale) {
  for (DecodeStepStats& step : steps) {
    for (HeadStepStats& hs : step.heads) {
      if (hs.dense.empty()) continue;
      const float threshold = threshold_scale / static_cast<float>(hs.attended);
      for (uint32_t j = 0; j < hs.dense.size(); ++j) {
        if (!(hs.dense[j] < threshold)) hs.listed.push_back(j);
      }
      hs.dense.clear();
    }
  }
}

// Rewrites a later step's slot ids of (layer, head) after that head kept `kept`.
void RemapThroughCompaction(HeadStepStats& hs, const std::vector<uint32_t>& kept) {
  auto new_index = [&](uint32_t old) -> int64_t {
    auto it = std::lower_bound(kept.begin(), kept.end(), old);
    return it != kept.end() && *it == old ? it - kept.begin() : -1;
  };
  std::vector<uint32_t> listed;
  for (uint32_t id : hs.listed) {
    if (int64_t n = new_index(id); n >= 0) listed.push_back(static_cast<uint32_t>(n));
  }
  hs.attended = static_cast<uint32_t>(std::lower_bound(kept.begin(), kept.end(), hs.attended) - kept.begin());
  hs.listed = std::move(listed);
}

// Whether some head of some layer holds more slots than its layer's budget.
bool AnyLayerOverBudget(const Sequence& seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu) {
  const KvLayout& l = seq.layout();
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    const uint32_t budget = seq.Budget(layer);
    for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
      if (seq.slots[size_t{layer} * l.num_kv_heads + h].size() > budget) return true;
    }
  }
  return false;
}

// Appends one step's attended counts and listed ids (views of the step's own vectors),
// (layer, head) by (layer, head), to the arrays ScissorhandsRings::Record takes.
void AppendStep(const DecodeStepStats& step, uint32_t heads, size_t lhs,
                std::vector<uint32_t>* attended, std::vector<kernels::ListedIds>* listed) {
  std::vector<const HeadStepStats*> by_lh(lhs, nullptr);
  for (const HeadStepStats& hs : step.heads) by_lh[size_t{hs.layer} * heads + hs.head] = &hs;
  for (size_t lh = 0; lh < lhs; ++lh) {
    attended->push_back(by_lh[lh]->attended);
    listed->push_back({by_lh[lh]->listed.data(), static_cast<uint32_t>(by_lh[lh]->listed.size())});
  }
}

// Evicts in every layer where a head is over its budget (one selection per layer) after
// step `s` was recorded, remapping the batch's later steps through each compaction.
absl::Status EvictOverBudgetLayers(Sequence& seq, std::vector<DecodeStepStats>& steps, size_t s,
                                   RetentionResult* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu) {
  const KvLayout& l = seq.layout();
  const uint32_t heads = l.num_kv_heads;
  ScissorhandsState& state = StateOf(seq);
  bool changed = false;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    kernels::ScissorhandsParams p = seq.policy.scissorhands;
    p.budget = seq.Budget(layer);
    bool layer_over = false;
    std::vector<uint32_t> layer_live(heads);
    for (uint32_t h = 0; h < heads; ++h) {
      layer_live[h] = seq.slots[size_t{layer} * heads + h].size();
      layer_over = layer_over || layer_live[h] > p.budget;
    }
    if (!layer_over) continue;
    std::vector<uint8_t> keep;
    if (absl::Status st = state.rings().Select(layer * heads, layer_live, p, &keep); !st.ok())
      return st;
    std::vector<std::vector<uint32_t>> kept(heads);
    for (uint32_t h = 0, base = 0; h < heads; base += layer_live[h], ++h) {
      kept[h] = KeptSlots(absl::MakeConstSpan(keep).subspan(base, layer_live[h]));
      for (size_t later = s + 1; later < steps.size(); ++later) {
        for (HeadStepStats& hs : steps[later].heads) {
          if (hs.layer == layer && hs.head == h) RemapThroughCompaction(hs, kept[h]);
        }
      }
    }
    CompactLayer(seq, layer, kept, out);
    changed = true;
  }
  if (changed) ++seq.epoch;
  return absl::OkStatus();
}

// Records the steps; after a step that finds a head over its budget, evicts
// (EvictOverBudgetLayers). Live counts change only by eviction, so when no head is over
// budget none will be for the rest of the batch: those steps are recorded in one call
// (the rings then pass over each history plane once for all of them).
absl::Status ApplyDecodeSteps(Sequence& seq, std::vector<DecodeStepStats>& steps, RetentionResult* out)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu) {
  const KvLayout& l = seq.layout();
  const uint32_t heads = l.num_kv_heads;
  const size_t lhs = seq.slots.size();
  ScissorhandsState& state = StateOf(seq);
  std::vector<uint32_t> live(lhs), attended;
  std::vector<kernels::ListedIds> listed;
  for (size_t s = 0; s < steps.size();) {
    const bool over = AnyLayerOverBudget(seq);
    const size_t end = over ? s + 1 : steps.size();
    for (size_t lh = 0; lh < lhs; ++lh) live[lh] = seq.slots[lh].size();
    attended.clear();
    listed.clear();
    for (size_t t = s; t < end; ++t) AppendStep(steps[t], heads, lhs, &attended, &listed);
    // No slot anywhere yet: nothing to record (the rings hold no planes).
    if (state.rings().stride() > 0) {
      if (absl::Status st = state.rings().Record(
              state.decode_steps(), static_cast<uint32_t>(end - s), live, attended, listed);
          !st.ok()) {
        return st;
      }
    }
    state.CountSteps(end - s);
    out->steps_applied += static_cast<uint32_t>(end - s);
    if (over) {
      if (absl::Status st = EvictOverBudgetLayers(seq, steps, s, out); !st.ok()) return st;
    }
    s = end;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RetentionState>> ScissorhandsState::Clone() const {
  absl::StatusOr<std::unique_ptr<ScissorhandsRings>> rings = rings_->Clone();
  if (!rings.ok()) return rings.status();
  auto copy = std::make_unique<ScissorhandsState>(*std::move(rings));
  copy->decode_steps_ = decode_steps_;
  return std::unique_ptr<RetentionState>(std::move(copy));
}

void ScissorhandsState::Compacted(const std::vector<HeadCompaction>& heads) {
  if (absl::Status s = rings_->Compact(heads); !s.ok()) {
    // The slots moved already; stale bits only bias later evictions of these heads.
    LogEvent(LogLevel::kError, "history_compaction_failed")
        .Field("head_index", heads.empty() ? 0 : heads.front().lh)
        .Field("heads", heads.size())
        .Field("error", s.ToString());
  }
}

void ScissorhandsState::Describe(size_t lh, uint32_t live, uint32_t* low_max, double* low_mean) const {
  std::vector<uint32_t> counts;
  if (live == 0 || !rings_->LowCounts(static_cast<uint32_t>(lh), live, &counts).ok()) return;
  uint64_t total = 0;
  for (uint32_t c : counts) {
    *low_max = std::max(*low_max, c);
    total += c;
  }
  *low_mean = static_cast<double>(total) / live;
}

absl::StatusOr<std::unique_ptr<RetentionState>> ScissorhandsStrategy::NewState(const RetentionPolicy& policy,
                                                                               size_t head_count,
                                                                               PoolDevice& device) const {
  absl::StatusOr<std::unique_ptr<ScissorhandsRings>> rings =
      device.NewScissorhandsRings(head_count, policy.scissorhands.window);
  if (!rings.ok()) return rings.status();
  return std::unique_ptr<RetentionState>(std::make_unique<ScissorhandsState>(*std::move(rings)));
}

absl::Status ScissorhandsStrategy::ApplyStats(Sequence& seq, StatsBatch& batch, bool one_back,
                                              RetentionResult* out) const {
  if (absl::Status s = RefuseOtherStats(seq, batch, true, false); !s.ok()) return s;
  auto live_now = [&](size_t lh) ABSL_NO_THREAD_SAFETY_ANALYSIS { return seq.slots[lh].size(); };
  auto live_before = [&](size_t lh) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return seq.last_remap[lh] ? seq.last_remap[lh]->old_size : seq.slots[lh].size();
  };
  for (size_t s = 0; s < batch.steps.size(); ++s) {
    absl::Status st = one_back ? ValidateStep(seq, batch.steps[s], s, live_before)
                               : ValidateStep(seq, batch.steps[s], s, live_now);
    if (!st.ok()) return st;
  }
  ListDenseRows(batch.steps, seq.policy.threshold_scale);
  if (one_back) {
    const uint32_t heads = seq.layout().num_kv_heads;
    for (DecodeStepStats& step : batch.steps) {
      for (HeadStepStats& hs : step.heads) {
        const auto& remap = seq.last_remap[size_t{hs.layer} * heads + hs.head];
        if (remap) RemapThroughCompaction(hs, remap->kept);
      }
    }
  }
  return ApplyDecodeSteps(seq, batch.steps, out);
}

std::vector<uint32_t> ScissorhandsStrategy::SqueezeKept(Sequence& seq, size_t lh, uint32_t live,
                                                        uint32_t budget) const {
  kernels::ScissorhandsParams p = seq.policy.scissorhands;
  p.budget = budget;
  p.drop = 1;  // squeezed exactly to the budget (live - B evictions), not by the drop amount m
  std::vector<uint8_t> keep;
  if (!StateOf(seq).rings().Select(static_cast<uint32_t>(lh), {live}, p, &keep).ok()) {
    keep.assign(live, 1);  // a selection that fails squeezes nothing
  }
  return KeptSlots(keep);
}

}  // namespace kvwarden
