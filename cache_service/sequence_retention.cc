// SequenceTable's retention half: compaction, Scissorhands decode statistics and WindowKV
// window scores. The table's bookkeeping half is in sequence_table.cc.

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "cache_service/log.h"
#include "cache_service/sequence.h"
#include "kernels/streaming.h"
#include "cache_service/sequence_table.h"
#include "cache_service/transfer_busy.h"
#include "kernels/compaction.h"
#include "kernels/scissorhands.h"
#include "kernels/windowkv.h"

namespace kvwarden {
namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// Kept slots of a keep mask.
std::vector<uint32_t> KeptSlots(const std::vector<uint8_t>& keep) {
  std::vector<uint32_t> out;
  for (uint32_t j = 0; j < keep.size(); ++j) {
    if (keep[j]) out.push_back(j);
  }
  return out;
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

// Slots a streaming head of `n` live slots keeps: the same rule as the kernels'.
std::vector<uint32_t> StreamingKept(uint32_t n, kernels::StreamingParams p) {
  std::vector<uint32_t> kept;
  for (uint32_t j = 0; j < n; ++j) {
    if (kernels::StreamingKeeps(j, n, p)) kept.push_back(j);
  }
  return kept;
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

}  // namespace

void SequenceTable::CompactLayerLocked(Sequence& seq, uint32_t layer,
                                       const std::vector<std::vector<uint32_t>>& kept,
                                       RetentionResult* out) {
  const KvLayout& l = seq.layout();
  const uint32_t heads = l.num_kv_heads;
  std::vector<uint8_t*> ptrs;
  for (PageId p : seq.pages[layer]) ptrs.push_back(seq.pool->PageData(p));
  std::vector<uint32_t> offsets = {0}, flat;
  uint32_t extent = 0;
  for (uint32_t h = 0; h < heads; ++h) {
    flat.insert(flat.end(), kept[h].begin(), kept[h].end());
    offsets.push_back(static_cast<uint32_t>(flat.size()));
    extent = std::max<uint32_t>(extent, kept[h].size());
  }
  if (absl::Status s = seq.pool->device_ops().Compact(l.geometry(), ptrs, offsets, flat); !s.ok()) {
    // Only a device failure gets here; the slot maps are left as they were, so reads
    // stay consistent with the (unmoved) bytes.
    LogWarning("sequence %d layer %u: compaction failed: %s", seq.id, layer, s.ToString());
    return;
  }
  const uint32_t words = kernels::ScissorhandsWords(seq.policy.scissorhands.window);
  for (uint32_t h = 0; h < heads; ++h) {
    const size_t lh = size_t{layer} * heads + h;
    SlotMap& map = seq.slots[lh];
    const uint32_t n = map.size(), k = static_cast<uint32_t>(kept[h].size());
    if (k == n) continue;
    if (seq.remap_epoch != seq.epoch + 1) {  // first change towards the next epoch
      seq.last_remap.assign(seq.slots.size(), std::nullopt);
      seq.remap_epoch = seq.epoch + 1;
    }
    seq.last_remap[lh] = Sequence::SlotRemap{n, kept[h]};
    HeadChange change{layer, h, k, {}};
    for (uint32_t j = 0, i = 0; j < n; ++j) {
      if (i < k && kept[h][i] == j) {
        ++i;
      } else {
        change.evicted_positions.push_back(map.position(j));
      }
    }
    map.Retain(kept[h]);
    seq.evicted[lh] += n - k;
    if (!seq.history.empty()) {
      const kernels::ScissorhandsHistory hist = seq.History(lh);
      for (uint32_t w = 0; w < words; ++w) {
        uint32_t* plane = hist.plane(0, w);
        for (uint32_t i = 0; i < k; ++i) plane[i] = plane[kept[h][i]];
        std::fill(plane + k, plane + n, 0u);  // freed slots start clean when reused
      }
    }
    out->changes.push_back(std::move(change));
  }
  // Whole pages past the new extent go back (never shared: see Fork).
  auto& table = seq.pages[layer];
  const size_t keep_pages = (extent + l.page_tokens - 1) / l.page_tokens;
  if (table.size() > keep_pages) {
    std::vector<PageId> tail(table.begin() + keep_pages, table.end());
    table.resize(keep_pages);
    out->pages_freed += seq.pool->Unref(tail);
  }
}

absl::Status SequenceTable::ApplyDecodeSteps(Sequence& seq, std::vector<DecodeStepStats>& steps,
                                             RetentionResult* out) {
  const KvLayout& l = seq.layout();
  const uint32_t heads = l.num_kv_heads;
  const RetentionPolicy& policy = seq.policy;
  for (size_t s = 0; s < steps.size(); ++s) {
    // Record the step in every head's ring.
    for (HeadStepStats& hs : steps[s].heads) {
      const size_t lh = size_t{hs.layer} * heads + hs.head;
      const uint32_t offsets[2] = {0, seq.slots[lh].size()};
      const uint32_t listed_offsets[2] = {0, static_cast<uint32_t>(hs.listed.size())};
      if (kernels::ScissorhandsRecordStepCpu({1, offsets}, seq.History(lh), seq.decode_steps,
                                             &hs.attended, listed_offsets, hs.listed.data()) !=
          kernels::KernelStatus::kOk) {
        return absl::InternalError("scissorhands record kernel refused validated statistics");
      }
    }
    ++seq.decode_steps;
    ++out->steps_applied;
    // Evict where a head is over its layer's budget.
    bool changed = false;
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      kernels::ScissorhandsParams p = policy.scissorhands;
      p.budget = seq.Budget(layer);
      bool over = false;
      for (uint32_t h = 0; h < heads; ++h) over = over || seq.slots[layer * heads + h].size() > p.budget;
      if (!over) continue;
      std::vector<std::vector<uint32_t>> kept(heads);
      for (uint32_t h = 0; h < heads; ++h) {
        const size_t lh = size_t{layer} * heads + h;
        const uint32_t offsets[2] = {0, seq.slots[lh].size()};
        std::vector<uint8_t> keep(offsets[1]);
        if (kernels::ScissorhandsSelectCpu({1, offsets}, seq.History(lh), p, keep.data(), nullptr) !=
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
      CompactLayerLocked(seq, layer, kept, out);
      changed = true;
    }
    if (changed) ++seq.epoch;
  }
  return absl::OkStatus();
}

absl::Status SequenceTable::ApplyWindowScores(Sequence& seq, const std::vector<WindowScoresIn>& scores,
                                              RetentionResult* out) {
  const KvLayout& l = seq.layout();
  const uint32_t heads = l.num_kv_heads;
  const WindowKvSpec& w = seq.policy.windowkv;
  // Validate every entry before applying any.
  for (size_t i = 0; i < scores.size(); ++i) {
    const WindowScoresIn& ws = scores[i];
    const std::string at = absl::StrCat("window_scores[", i, "]");
    if (ws.layer >= l.num_layers || ws.layer % w.gamma != 0) {
      return Invalid(absl::StrFormat("%s: layer %u is not a group leader (layers 0, %u, ... below %u)",
                                     at, ws.layer, w.gamma, l.num_layers));
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
      return Invalid(absl::StrFormat("%s: %d sums given, %d expected (%u heads x %u candidates)", at,
                                     ws.sums.size(), want, heads, n - w.alpha));
    }
    for (float x : ws.sums) {
      if (!std::isfinite(x) || x < 0) return Invalid(absl::StrFormat("%s: sum %g is not finite and >= 0", at, x));
    }
  }
  bool changed = false;
  for (const WindowScoresIn& ws : scores) {
    const uint32_t n = seq.slots[size_t{ws.layer} * heads].size();
    kernels::WindowKvParams p{w.alpha, w.omega, w.top_p, w.group_budgets[ws.layer / w.gamma]};
    std::vector<double> window_scores(kernels::WindowKvNumWindows(n - w.alpha, w.omega));
    std::vector<uint8_t> keep(n);
    if (kernels::WindowKvScoreCpu(ws.sums.data(), heads, n, p, window_scores.data()) != kernels::KernelStatus::kOk ||
        kernels::WindowKvSelectCpu(window_scores.data(), n, p, keep.data()) != kernels::KernelStatus::kOk) {
      return absl::InternalError("windowkv kernels refused validated scores");
    }
    const std::vector<uint32_t> kept = KeptSlots(keep);
    if (kept.size() == n) continue;
    const std::vector<std::vector<uint32_t>> all_heads(heads, kept);
    for (uint32_t layer = ws.layer; layer < ws.layer + w.gamma; ++layer) {
      CompactLayerLocked(seq, layer, all_heads, out);
    }
    changed = true;
  }
  if (changed) ++seq.epoch;
  return absl::OkStatus();
}

bool SequenceTable::EnforceBudgetLocked(Sequence& seq, RetentionResult* out) {
  const KvLayout& l = seq.layout();
  const uint32_t heads = l.num_kv_heads;
  bool changed = false;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    const uint32_t budget = seq.Budget(layer);
    if (seq.LayerSlots(layer) <= budget) continue;
    std::vector<std::vector<uint32_t>> kept(heads);
    for (uint32_t h = 0; h < heads; ++h) {
      const size_t lh = size_t{layer} * heads + h;
      const uint32_t n = seq.slots[lh].size();
      if (seq.policy.kind == PolicyKind::kScissorhands) {
        std::vector<uint8_t> keep(n, 1);
        const uint32_t offsets[2] = {0, n};
        kernels::ScissorhandsParams p = seq.policy.scissorhands;
        p.budget = budget;
        // Squeezed exactly to the budget (n - B evictions), not by the drop amount m.
        p.drop = 1;
        if (kernels::ScissorhandsSelectCpu({1, offsets}, seq.History(lh), p, keep.data(), nullptr) !=
            kernels::KernelStatus::kOk) {
          continue;
        }
        kept[h] = KeptSlots(keep);
      } else {
        kept[h] = StreamingKept(n, {budget, std::min(seq.policy.streaming.sinks, budget - 1)});
      }
    }
    CompactLayerLocked(seq, layer, kept, out);
    changed = true;
  }
  return changed;
}

void SequenceTable::MakeStreamingRoomLocked(Sequence& seq, uint32_t num_tokens) {
  const KvLayout& l = seq.layout();
  // Keep the sinks and the newest slots so that the new tokens fit the budget.
  const kernels::StreamingParams room{seq.Budget(0) - num_tokens, seq.policy.streaming.sinks};
  RetentionResult dropped;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    if (seq.LayerSlots(layer) <= room.budget) continue;
    std::vector<std::vector<uint32_t>> kept(l.num_kv_heads);
    for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
      kept[h] = StreamingKept(seq.slots[size_t{layer} * l.num_kv_heads + h].size(), room);
    }
    CompactLayerLocked(seq, layer, kept, &dropped);
  }
  if (!dropped.changes.empty()) ++seq.epoch;
}

uint64_t SequenceTable::RelievePressure(PagePool* pool, uint64_t pages_wanted, SequenceId exclude) {
  std::vector<std::shared_ptr<Sequence>> candidates;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [id, seq] : sequences_) {
      if (id != exclude && seq->pool == pool &&
          (seq->policy.kind == PolicyKind::kScissorhands || seq->policy.kind == PolicyKind::kStreaming)) {
        candidates.push_back(seq);
      }
    }
  }
  // Lowest tenant weight first; within a weight, the sequences holding the most slots.
  auto held = [](const Sequence& s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.num_tokens; };
  std::sort(candidates.begin(), candidates.end(), [&](const auto& a, const auto& b) {
    const uint32_t wa = options_.ledger->spec(a->tenant).weight, wb = options_.ledger->spec(b->tenant).weight;
    return wa != wb ? wa < wb : held(*a) > held(*b);
  });
  uint64_t freed = 0;
  const uint64_t used = pool->used_pages();
  for (const auto& seq : candidates) {
    if (freed >= pages_wanted) break;
    if (!seq->mu.TryLock()) continue;  // busy in another call: never wait here
    if (!seq->released && seq->transfers == 0) {  // a transfer's pages are not squeezed
      const uint32_t floor = seq->policy.kind == PolicyKind::kScissorhands
                                 ? seq->policy.scissorhands.recent + seq->policy.scissorhands.sinks + 1
                                 : seq->policy.streaming.sinks + 1;
      uint32_t widest = 0;
      for (uint32_t layer = 0; layer < seq->layout().num_layers; ++layer) {
        widest = std::max(widest, std::min(seq->Budget(layer), seq->LayerSlots(layer)));
      }
      const uint32_t tighter = std::max(floor, widest - widest / 4);
      if (tighter < widest) {
        const uint32_t before = seq->pressure_budget ? seq->pressure_budget : seq->Budget(0);
        seq->pressure_budget = tighter;
        RetentionResult result;
        if (EnforceBudgetLocked(*seq, &result)) ++seq->epoch;
        freed += result.pages_freed;
        seq->pressure_note = absl::StrFormat(
            "budget %u -> %u at %s: pool '%s' at %d of %d pages (high-water %u%%), tenant weight %u",
            before, tighter, absl::FormatTime("%H:%M:%S", absl::Now(), absl::UTCTimeZone()), pool->name(),
            used, pool->capacity_pages(), pool->high_water_percent(),
            options_.ledger->spec(seq->tenant).weight);
        LogInfo("memory pressure: sequence %d %s; freed %d pages", seq->id, seq->pressure_note,
                result.pages_freed);
      }
    }
    seq->mu.Unlock();
  }
  return freed;
}

absl::StatusOr<RetentionResult> SequenceTable::ApplyStats(SequenceId id, TenantId tenant, StatsBatch batch) {
  absl::StatusOr<std::shared_ptr<Sequence>> found = Find(id, Caller::Tenant(tenant));
  if (!found.ok()) return found.status();
  Sequence& seq = **found;
  absl::MutexLock lock(&seq.mu);
  if (seq.released) return absl::NotFoundError(absl::StrCat("sequence ", id, " not found"));
  // Compaction moves bytes in place: not while a transfer holds the pages, so a transfer
  // moves exactly its epoch's bytes. Transfers end at the latest at expiry.
  if (seq.TransfersBusy(/*writes_only=*/false)) return TransferBusyError(id);
  if (batch.steps.empty() && batch.window_scores.empty()) {
    return Invalid("the message carries no steps and no window scores");
  }
  // One epoch back is remapped through the last change's slot map; older is refused.
  // Compared without `batch.epoch + 1`: an untrusted 2^64 - 1 wraps that to 0.
  const bool one_back = seq.epoch > 0 && batch.epoch == seq.epoch - 1 &&
                        seq.remap_epoch == seq.epoch && seq.last_remap.size() == seq.slots.size();
  if (batch.epoch != seq.epoch && !one_back) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "epoch: statistics for epoch %d, sequence %d is at epoch %d; recompute against the new slots",
        batch.epoch, id, seq.epoch));
  }
  if (!batch.steps.empty() && seq.policy.kind != PolicyKind::kScissorhands) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "steps: sequence %d has policy %s, which takes no decode statistics", id, seq.policy.Name()));
  }
  if (!batch.window_scores.empty() && seq.policy.kind != PolicyKind::kWindowKv) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "window_scores: sequence %d has policy %s, not windowkv", id, seq.policy.Name()));
  }
  if (one_back && !batch.window_scores.empty()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "epoch: window scores for epoch %d, sequence %d is at epoch %d", batch.epoch, id, seq.epoch));
  }
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
  RetentionResult result;
  absl::Status applied = batch.steps.empty() ? ApplyWindowScores(seq, batch.window_scores, &result)
                                             : ApplyDecodeSteps(seq, batch.steps, &result);
  if (!applied.ok()) return applied;
  result.epoch = seq.epoch;
  return result;
}

}  // namespace kvwarden
