#pragma once

// What a retention policy decides, as the SequenceTable sees it: its per-sequence
// state, how it makes room at ReserveSlots, how it applies a stats message, how it
// squeezes under memory pressure and what a fork shares. The table finds the sequence,
// takes its lock, checks the epoch and transfer leases, and hands the rest to the
// strategy its RetentionStrategies (given in SequenceTable::Options) names for the
// policy's kind; strategies change a sequence only through CompactLayer
// (sequence_compaction.h). The strategies themselves live in cache_service/retention/
// (DefaultRetentionStrategies); adding a policy is one strategy file there, its
// PolicyKind and its proto. The defaults here are the full policy's (keep everything).
//
// Strategies are stateless singletons (thread-safe); every method that takes a
// Sequence requires its mutex (held exclusively where it changes it).

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "cache_service/core/pool_device.h"
#include "cache_service/core/retention_policy.h"
#include "cache_service/core/retention_state.h"
#include "cache_service/core/sequence.h"
#include "cache_service/core/stats_batch.h"

namespace kvwarden {

class RetentionStrategy {
 public:
  virtual ~RetentionStrategy() = default;

  // State kept beside the slots, for a new sequence of `head_count` (layer, head)s in
  // `device`'s memory; null when the policy keeps none.
  virtual absl::StatusOr<std::unique_ptr<RetentionState>> NewState(const RetentionPolicy& policy,
                                                                   size_t head_count, PoolDevice& device) const;

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
  virtual void MakeRoom(Sequence& seq, uint32_t num_tokens, std::vector<HeadChange>* dropped) const
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

// The strategy of each policy kind (cache_service/retention/strategies.h).
class RetentionStrategies {
 public:
  virtual ~RetentionStrategies() = default;
  virtual const RetentionStrategy& For(PolicyKind kind) const = 0;
};

// Indices j with keep[j] set.
std::vector<uint32_t> KeptSlots(absl::Span<const uint8_t> keep);

}  // namespace kvwarden
