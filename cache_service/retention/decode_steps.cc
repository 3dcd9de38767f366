#include "cache_service/retention/decode_steps.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/core/sequences/sequence_compaction.h"

namespace kvwarden {
namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

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

// Rewrites a later step's slot ids of (layer, head) after that head kept `kept`: listed
// ids and dense values follow their slots; dropped slots go.
void RemapThroughCompaction(HeadStepStats& hs, const std::vector<uint32_t>& kept) {
  auto new_index = [&](uint32_t old) -> int64_t {
    auto it = std::lower_bound(kept.begin(), kept.end(), old);
    return it != kept.end() && *it == old ? it - kept.begin() : -1;
  };
  std::vector<uint32_t> listed;
  for (uint32_t id : hs.listed) {
    if (int64_t n = new_index(id); n >= 0) listed.push_back(static_cast<uint32_t>(n));
  }
  const uint32_t attended =
      static_cast<uint32_t>(std::lower_bound(kept.begin(), kept.end(), hs.attended) - kept.begin());
  if (!hs.dense.empty()) {
    std::vector<float> dense(attended);
    for (uint32_t i = 0; i < attended; ++i) dense[i] = hs.dense[kept[i]];
    hs.dense = std::move(dense);
  }
  hs.attended = attended;
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

// Evicts in every layer where a head is over its budget after step `s` was recorded,
// remapping the batch's later steps through each compaction.
absl::Status EvictOverBudgetLayers(Sequence& seq, std::vector<DecodeStepStats>& steps, size_t s,
                                   const DecodeStepOps& ops, RetentionResult* out)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu) {
  const KvLayout& l = seq.layout();
  const uint32_t heads = l.num_kv_heads;
  bool changed = false;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    const uint32_t budget = seq.Budget(layer);
    bool layer_over = false;
    std::vector<uint32_t> layer_live(heads);
    for (uint32_t h = 0; h < heads; ++h) {
      layer_live[h] = seq.slots[size_t{layer} * heads + h].size();
      layer_over = layer_over || layer_live[h] > budget;
    }
    if (!layer_over) continue;
    std::vector<uint8_t> keep;
    if (absl::Status st = ops.select(layer, layer_live, budget, &keep); !st.ok()) return st;
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

}  // namespace

absl::Status ValidateDecodeSteps(const Sequence& seq, const std::vector<DecodeStepStats>& steps, bool one_back) {
  auto live_now = [&](size_t lh) ABSL_NO_THREAD_SAFETY_ANALYSIS { return seq.slots[lh].size(); };
  auto live_before = [&](size_t lh) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return seq.last_remap[lh] ? seq.last_remap[lh]->old_size : seq.slots[lh].size();
  };
  for (size_t s = 0; s < steps.size(); ++s) {
    absl::Status st = one_back ? ValidateStep(seq, steps[s], s, live_before) : ValidateStep(seq, steps[s], s, live_now);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

void RemapOneBack(const Sequence& seq, std::vector<DecodeStepStats>& steps) {
  const uint32_t heads = seq.layout().num_kv_heads;
  for (DecodeStepStats& step : steps) {
    for (HeadStepStats& hs : step.heads) {
      const auto& remap = seq.last_remap[size_t{hs.layer} * heads + hs.head];
      if (remap) RemapThroughCompaction(hs, remap->kept);
    }
  }
}

absl::Status ApplyDecodeSteps(Sequence& seq, std::vector<DecodeStepStats>& steps, const DecodeStepOps& ops,
                              RetentionResult* out) {
  const size_t lhs = seq.slots.size();
  std::vector<uint32_t> live(lhs);
  for (size_t s = 0; s < steps.size();) {
    const bool over = AnyLayerOverBudget(seq);
    const size_t end = over ? s + 1 : steps.size();
    for (size_t lh = 0; lh < lhs; ++lh) live[lh] = seq.slots[lh].size();
    if (absl::Status st = ops.record(s, end, live); !st.ok()) return st;
    out->steps_applied += static_cast<uint32_t>(end - s);
    if (over) {
      if (absl::Status st = EvictOverBudgetLayers(seq, steps, s, ops, out); !st.ok()) return st;
    }
    s = end;
  }
  return absl::OkStatus();
}

}  // namespace kvwarden
