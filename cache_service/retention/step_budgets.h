#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache_service/core/memory/kv_layout.h"

namespace kvwarden {

// The budgets of a decode-step policy's wire form (scissorhands, h2o): `budget` for every
// layer, or `layer_budgets` with one entry per layer. Each layer's budget must exceed
// `recent` and `sinks` on their own and their sum (in 64 bits: a 32-bit sum wraps), and
// be at least `drop`. Returns one budget per layer; errors are INVALID_ARGUMENT naming
// the field under `field`.
absl::StatusOr<std::vector<uint32_t>> StepBudgetsFromProto(uint32_t budget,
                                                           absl::Span<const uint32_t> layer_budgets,
                                                           uint32_t recent, uint32_t sinks,
                                                           uint32_t drop, const KvLayout& layout,
                                                           const std::string& field);

}  // namespace kvwarden
