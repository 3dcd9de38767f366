#include "cache_service/retention/scissorhands_strategy.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/sequence_compaction.h"

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

// Records each step, then evicts in every layer where a head is over its budget,
// remapping the batch's later steps through each compaction.
absl::Status ApplyDecodeSteps(Sequence& seq, std::vector<DecodeStepStats>& steps, RetentionResult* out)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu) {
  const KvLayout& l = seq.layout();
  const uint32_t heads = l.num_kv_heads;
  ScissorhandsState& state = StateOf(seq);
  for (size_t s = 0; s < steps.size(); ++s) {
    for (HeadStepStats& hs : steps[s].heads) {
      const size_t lh = size_t{hs.layer} * heads + hs.head;
      const uint32_t offsets[2] = {0, seq.slots[lh].size()};
      const uint32_t listed_offsets[2] = {0, static_cast<uint32_t>(hs.listed.size())};
      if (kernels::ScissorhandsRecordStepCpu({1, offsets}, state.History(lh), state.decode_steps(),
                                             &hs.attended, listed_offsets, hs.listed.data()) !=
          kernels::KernelStatus::kOk) {
        return absl::InternalError("scissorhands record kernel refused validated statistics");
      }
    }
    state.CountStep();
    ++out->steps_applied;
    bool changed = false;
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      kernels::ScissorhandsParams p = seq.policy.scissorhands;
      p.budget = seq.Budget(layer);
      bool over = false;
      for (uint32_t h = 0; h < heads; ++h) over = over || seq.slots[layer * heads + h].size() > p.budget;
      if (!over) continue;
      std::vector<std::vector<uint32_t>> kept(heads);
      for (uint32_t h = 0; h < heads; ++h) {
        const size_t lh = size_t{layer} * heads + h;
        const uint32_t offsets[2] = {0, seq.slots[lh].size()};
        std::vector<uint8_t> keep(offsets[1]);
        if (kernels::ScissorhandsSelectCpu({1, offsets}, state.History(lh), p, keep.data(), nullptr) !=
            kernels::KernelStatus::kOk) {
          return absl::InternalError("scissorhands select kernel refused a validated policy");
        }
        kept[h] = KeptSlots(keep);
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
  }
  return absl::OkStatus();
}

}  // namespace

void ScissorhandsState::Appended(size_t, uint32_t live) {
  if (live <= stride_) return;
  const uint32_t stride = std::max({live, 2 * stride_, 64u});
  const uint32_t words = kernels::ScissorhandsWords(window_);
  for (std::vector<uint32_t>& planes : history_) {
    std::vector<uint32_t> grown(size_t{words} * stride, 0);
    for (uint32_t w = 0; w < words && stride_ > 0; ++w) {
      std::copy_n(planes.begin() + size_t{w} * stride_, stride_, grown.begin() + size_t{w} * stride);
    }
    planes = std::move(grown);
  }
  stride_ = stride;
}

void ScissorhandsState::Compacted(size_t lh, const std::vector<uint32_t>& kept, uint32_t old_live) {
  const uint32_t words = kernels::ScissorhandsWords(window_);
  const uint32_t k = static_cast<uint32_t>(kept.size());
  const kernels::ScissorhandsHistory hist = History(lh);
  for (uint32_t w = 0; w < words; ++w) {
    uint32_t* plane = hist.plane(0, w);
    for (uint32_t i = 0; i < k; ++i) plane[i] = plane[kept[i]];
    std::fill(plane + k, plane + old_live, 0u);  // freed slots start clean when reused
  }
}

void ScissorhandsState::Describe(size_t lh, uint32_t live, uint32_t* low_max, double* low_mean) const {
  if (live == 0) return;
  const uint32_t words = kernels::ScissorhandsWords(window_);
  uint64_t total = 0;
  for (uint32_t j = 0; j < live; ++j) {
    uint32_t c = 0;
    for (uint32_t w = 0; w < words; ++w) c += kernels::PopCount32(history_[lh][size_t{w} * stride_ + j]);
    *low_max = std::max(*low_max, c);
    total += c;
  }
  *low_mean = static_cast<double>(total) / live;
}

std::unique_ptr<RetentionState> ScissorhandsStrategy::NewState(const RetentionPolicy& policy,
                                                               size_t head_count) const {
  return std::make_unique<ScissorhandsState>(policy.scissorhands.window, head_count);
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
  std::vector<uint8_t> keep(live, 1);
  const uint32_t offsets[2] = {0, live};
  kernels::ScissorhandsParams p = seq.policy.scissorhands;
  p.budget = budget;
  p.drop = 1;  // squeezed exactly to the budget (live - B evictions), not by the drop amount m
  if (kernels::ScissorhandsSelectCpu({1, offsets}, StateOf(seq).History(lh), p, keep.data(), nullptr) !=
      kernels::KernelStatus::kOk) {
    std::fill(keep.begin(), keep.end(), 1);  // a policy the kernel refuses squeezes nothing
  }
  return KeptSlots(keep);
}

}  // namespace kvwarden
