#pragma once

// A sequence's retention policy, validated (policy_config.cc builds it from the wire
// form). Plain data; immutable once the sequence exists.

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/scissorhands.h"
#include "kernels/streaming.h"

namespace kvwarden {

enum class PolicyKind { kFull, kStreaming, kScissorhands, kWindowKv };
inline constexpr int kNumPolicyKinds = 4;
// "full", "streaming", "scissorhands", "windowkv".
const char* PolicyKindName(PolicyKind kind);

struct WindowKvSpec {
  uint32_t alpha = 8;
  uint32_t omega = 8;
  uint32_t top_p = 8;
  uint32_t gamma = 8;
  uint32_t lambda = 14;
  uint32_t mean_budget = 0;
  bool aggregation = false;
  std::vector<uint32_t> group_budgets;  // one per group of gamma layers
};

struct RetentionPolicy {
  PolicyKind kind = PolicyKind::kFull;
  kernels::StreamingParams streaming;
  kernels::ScissorhandsParams scissorhands;  // .budget is the default B
  float threshold_scale = 1.0f;
  std::vector<uint32_t> layer_budgets;  // scissorhands: B per layer (filled for every layer)
  WindowKvSpec windowkv;

  // Slots a head of `layer` may keep; `max_tokens` for policies without a budget.
  uint32_t LayerBudget(uint32_t layer, uint32_t max_tokens) const;
  std::string Name() const;
  // "scissorhands B=256 w=400 r=10 m=128 sinks=0 scale=1", for operators.
  std::string Summary() const;
};

}  // namespace kvwarden
