#pragma once

#include <cstdint>
#include <vector>

#include "cache_service/core/sequences/stats_batch.h"
#include "cache_service/core/sequences/sequence.h"

namespace kvwarden {

// The one way retention changes a sequence: every head h of `layer` keeps kept[h]
// (ascending slot indices). Moves the kept slots' bytes to the front (the pool's device
// does the copy), their positions and the policy state (RetentionState::Compacted),
// frees whole pages past the new extent, counts the evictions and records the slot map
// so statistics one epoch back can be remapped; each head that changed is reported in
// `out`. The caller bumps the epoch. A device failure changes nothing (logged).
void CompactLayer(Sequence& seq, uint32_t layer, const std::vector<std::vector<uint32_t>>& kept,
                  RetentionResult* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);

}  // namespace kvwarden
