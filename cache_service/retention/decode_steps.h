#pragma once

// What the decode-step policies (scissorhands, h2o) share: validating a stats message's
// steps against the sequence, remapping steps one epoch back through the last compaction,
// and the driver that records steps and evicts the layers over budget between them.
// Every function requires the sequence's mutex (exclusive where it changes it).

#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "cache_service/core/sequences/retention_strategy.h"
#include "cache_service/core/sequences/sequence.h"
#include "cache_service/core/sequences/stats_batch.h"

namespace kvwarden {

// Checks every step of `steps` against the sequence (its epoch, or the one before when
// `one_back`): every (layer, head) once, attended within the live slots, listed ids below
// attended, dense rows of `attended` finite values >= 0, not both. Changes nothing.
absl::Status ValidateDecodeSteps(const Sequence& seq, const std::vector<DecodeStepStats>& steps, bool one_back)
    ABSL_SHARED_LOCKS_REQUIRED(seq.mu);

// Steps for the epoch before: rewrites their slot ids (listed and dense) through the last
// compaction, so they name today's slots.
void RemapOneBack(const Sequence& seq, std::vector<DecodeStepStats>& steps) ABSL_SHARED_LOCKS_REQUIRED(seq.mu);

// A step policy's two operations on its state.
struct DecodeStepOps {
  // Records steps [first, end) of the batch; every head holds live[lh] slots throughout.
  absl::FunctionRef<absl::Status(size_t first, size_t end, const std::vector<uint32_t>& live)> record;
  // Keep masks for the heads of `layer` (holding layer_live[h] slots), packed head after
  // head, for a budget of `budget`.
  absl::FunctionRef<absl::Status(uint32_t layer, const std::vector<uint32_t>& layer_live, uint32_t budget,
                                 std::vector<uint8_t>* keep)>
      select;
};

// Records the steps; after a step that finds a head over its budget, evicts every layer
// over budget (one selection per layer) and remaps the batch's later steps through each
// compaction. Live counts change only by eviction, so when no head is over budget none
// will be for the rest of the batch: those steps are recorded in one call.
absl::Status ApplyDecodeSteps(Sequence& seq, std::vector<DecodeStepStats>& steps, const DecodeStepOps& ops,
                              RetentionResult* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);

}  // namespace kvwarden
