#pragma once

// What a retention policy decides, as the SequenceTable sees it: its per-sequence
// state, how it makes room at ReserveSlots, how it applies a stats message, how it
// squeezes under memory pressure and what a fork shares. The table finds the sequence,
// takes its lock, checks the epoch and transfer leases, and hands the rest to the
// strategy its RetentionPolicy names; strategies change a sequence only through
// CompactLayer (sequence_compaction.h). Each policy lives in its own folder under
// cache_service/retention/ (the README's "Adding a policy" lists what one touches).
// The defaults here keep every token: KeepAll() is the "full" policy.
//
// Strategies are stateless singletons (thread-safe); every method that takes a
// Sequence requires its mutex (held exclusively where it changes it).

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "cache_service/core/memory/pool_device.h"
#include "cache_service/core/sequences/retention_policy.h"
#include "cache_service/core/sequences/retention_state.h"
#include "cache_service/core/sequences/sequence.h"
#include "cache_service/core/sequences/stats_batch.h"

namespace kvwarden {

class RetentionStrategy {
 public:
  virtual ~RetentionStrategy() = default;

  // Keeps every token ("full"): no state, no statistics, nothing to squeeze; the only
  // policy whose forks share full pages (it never compacts them in place).
  static const RetentionStrategy& KeepAll();
  // The policy's name on the wire, in metrics and for operators ("scissorhands").
  virtual const char* name() const = 0;
  // Whether `cause` can make this policy evict (metrics make those series up front).
  virtual bool Evicts(RetentionCause /*cause*/) const { return false; }

  // State kept beside the slots, for a new sequence of `head_count` (layer, head)s in
  // `device`'s memory; null when the policy keeps none.
  virtual absl::StatusOr<std::unique_ptr<RetentionState>> NewState(const RetentionPolicy& policy,
                                                                   size_t head_count, PoolDevice& device) const;
  // A state written by RetentionState::Encode, for a sequence of `head_count` heads of
  // `policy` in `device`'s memory: DATA_LOSS when `bytes` are not a whole, checked
  // encoding of this policy's state for that shape; nothing is made then.
  virtual absl::StatusOr<std::unique_ptr<RetentionState>> DecodeState(const RetentionPolicy& policy,
                                                                      size_t head_count, PoolDevice& device,
                                                                      absl::string_view bytes) const;

  // Whether a fork shares its parent's full pages (the policy never compacts in place).
  virtual bool ForkSharesPages() const { return false; }

  // ReserveSlots. CheckReserve refuses what the policy can never take; KeptBefore is
  // the slots a head of `live` keeps before `num_tokens` are appended; MakeRoom does
  // that (after the pages are allocated; it cannot fail) and adds what it dropped to
  // `dropped`. ReserveCompacts: MakeRoom may move bytes, so not while a transfer lease
  // holds the pages.
  virtual absl::Status CheckReserve(const Sequence& seq, uint32_t num_tokens) const
      ABSL_SHARED_LOCKS_REQUIRED(seq.mu);
  virtual uint32_t KeptBefore(const Sequence& seq, uint32_t live, uint32_t num_tokens) const
      ABSL_SHARED_LOCKS_REQUIRED(seq.mu);
  virtual bool ReserveCompacts() const { return false; }
  virtual void MakeRoom(Sequence& seq, uint32_t num_tokens, std::vector<HeadRetention>* dropped) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);

  // StreamStats: `batch` names the sequence's epoch, or the one before when `one_back`
  // (its slot ids then still need remapping through seq.last_remap). Validates all of
  // it before changing anything; the epoch grows once per change.
  virtual absl::Status ApplyStats(Sequence& seq, StatsBatch& batch, bool one_back, RetentionResult* out) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);

  // Memory pressure. Squeezable: the policy has budgets to tighten, never below
  // SqueezeFloor. Squeeze compacts every layer over seq.Budget(layer) down to it and
  // returns whether anything changed.
  virtual bool Squeezable() const { return false; }
  virtual uint32_t SqueezeFloor(const RetentionPolicy& policy) const;
  bool Squeeze(Sequence& seq, RetentionResult* out) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);

 protected:
  // The slots head `lh` (of `live`) keeps when squeezed to `budget`.
  virtual std::vector<uint32_t> SqueezeKept(Sequence& seq, size_t lh, uint32_t live, uint32_t budget) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);
  // FAILED_PRECONDITION for the parts of `batch` this policy does not take.
  static absl::Status RefuseOtherStats(const Sequence& seq, const StatsBatch& batch, bool takes_steps,
                                       bool takes_window_scores);
};

// Indices j with keep[j] set.
std::vector<uint32_t> KeptSlots(absl::Span<const uint8_t> keep);

}  // namespace kvwarden
