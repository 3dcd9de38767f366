// SequenceTable's retention entry points: a stats message (the epoch and transfer checks
// here, the rest in the sequence's RetentionStrategy) and memory pressure.

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "cache_service/core/sequences/retention_strategy.h"
#include "cache_service/core/sequences/sequence.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "cache_service/core/sequences/transfer_busy.h"
#include "cache_service/util/log.h"

namespace kvwarden {

uint64_t SequenceTable::RelievePressure(PagePool* pool, uint64_t pages_wanted, SequenceId exclude) {
  std::vector<std::shared_ptr<Sequence>> candidates;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [id, seq] : sequences_) {
      if (id != exclude && seq->pool == pool && seq->policy.Strategy().Squeezable()) {
        candidates.push_back(seq);
      }
    }
  }
  // Lowest tenant weight first; within a weight, the sequences holding the most slots.
  auto held = [](const Sequence& s) ABSL_NO_THREAD_SAFETY_ANALYSIS { return s.num_tokens; };
  std::sort(candidates.begin(), candidates.end(), [&](const auto& a, const auto& b) {
    const uint32_t wa = options_.ledger->weight(a->tenant), wb = options_.ledger->weight(b->tenant);
    return wa != wb ? wa < wb : held(*a) > held(*b);
  });
  uint64_t freed = 0;
  const uint64_t used = pool->used_pages();
  for (const auto& seq : candidates) {
    if (freed >= pages_wanted) break;
    if (!seq->mu.TryLock()) continue;             // busy in another call: never wait here
    if (!seq->released && seq->transfers == 0) {  // a transfer's pages are not squeezed
      const RetentionStrategy& strategy = seq->policy.Strategy();
      const uint32_t floor = strategy.SqueezeFloor(seq->policy);
      uint32_t widest = 0;
      for (uint32_t layer = 0; layer < seq->layout().num_layers; ++layer) {
        widest = std::max(widest, std::min(seq->Budget(layer), seq->LayerSlots(layer)));
      }
      const uint32_t tighter = std::max(floor, widest - widest / 4);
      if (tighter < widest) {
        const uint32_t before = seq->pressure_budget ? seq->pressure_budget : seq->Budget(0);
        seq->pressure_budget = tighter;
        RetentionResult result;
        const absl::Time started = Now();
        if (strategy.Squeeze(*seq, &result)) ++seq->epoch;
        ReportCompression(*seq, RetentionCause::kPressure, result.changes, started);
        events().PressureTightened(pool->name());
        freed += result.pages_freed;
        seq->pressure_note = absl::StrFormat(
            "budget %u -> %u at %s: pool '%s' at %d of %d pages (high-water %u%%), tenant weight "
            "%u",
            before, tighter, absl::FormatTime("%H:%M:%S", Now(), absl::UTCTimeZone()), pool->name(),
            used, pool->capacity_pages(), pool->high_water_percent(),
            options_.ledger->weight(seq->tenant));
        LogEvent(LogLevel::kInfo, "pressure_tightened")
            .Field("pool", pool->name())
            .Field("tenant", options_.ledger->name(seq->tenant))
            .Field("sequence", seq->id)
            .Field("budget_before", before)
            .Field("budget_after", tighter)
            .Field("pages_freed", result.pages_freed)
            .Field("pool_used_pages", used)
            .Field("pool_capacity_pages", pool->capacity_pages());
      }
    }
    seq->mu.Unlock();
  }
  return freed;
}

absl::StatusOr<RetentionResult> SequenceTable::ApplyStats(SequenceId id, TenantId tenant,
                                                          StatsBatch batch) {
  absl::StatusOr<std::shared_ptr<Sequence>> found = Find(id, Caller::Tenant(tenant));
  if (!found.ok()) return found.status();
  Sequence& seq = **found;
  absl::MutexLock lock(&seq.mu);
  if (seq.released) return absl::NotFoundError(absl::StrCat("sequence ", id, " not found"));
  // Compaction moves bytes in place: not while a transfer holds the pages, so a transfer
  // moves exactly its epoch's bytes. Transfers end at the latest at expiry.
  if (seq.TransfersBusy(/*writes_only=*/false)) return TransferBusyError(id);
  if (batch.steps.empty() && batch.window_scores.empty()) {
    return absl::InvalidArgumentError("the message carries no steps and no window scores");
  }
  // One epoch back is remapped through the last change's slot map; older is refused.
  // Compared without `batch.epoch + 1`: an untrusted 2^64 - 1 wraps that to 0.
  const bool one_back = seq.epoch > 0 && batch.epoch == seq.epoch - 1 &&
                        seq.remap_epoch == seq.epoch && seq.last_remap.size() == seq.slots.size();
  if (batch.epoch != seq.epoch && !one_back) {
    return absl::FailedPreconditionError(
        absl::StrFormat("epoch: statistics for epoch %d, sequence %d is at epoch %d; recompute "
                        "against the new slots",
                        batch.epoch, id, seq.epoch));
  }
  RetentionResult result;
  const absl::Time started = Now();
  if (absl::Status s = seq.policy.Strategy().ApplyStats(seq, batch, one_back, &result); !s.ok())
    return s;
  result.epoch = seq.epoch;
  ReportCompression(seq, RetentionCause::kStats, result.changes, started);
  uint64_t ids = 0;
  for (const DecodeStepStats& step : batch.steps) {
    for (const HeadStepStats& h : step.heads) ids += h.listed.size() + h.dense.size();
  }
  for (const WindowScoresIn& w : batch.window_scores) ids += w.sums.size();
  events().StatsApplied(ids);
  seq.Touch(Now());
  return result;
}

}  // namespace kvwarden
