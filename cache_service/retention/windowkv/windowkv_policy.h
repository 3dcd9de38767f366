#pragma once

// WindowKV (Zuo et al., 2025, "WindowKV: Task-Adaptive Group-Wise KV Cache Window
// Selection for Efficient LLM Inference"): once, at the end of prefill, each group of
// gamma layers keeps the windows of omega tokens its heads' observation-window (the last
// alpha tokens) attention ranks highest, within the group's budget; budgets fall with
// depth by lambda around the mean.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cache_service/core/memory/kv_layout.h"
#include "cache_service/core/sequences/retention_policy.h"

namespace kvwarden {

namespace v1 {
class WindowKvPolicy;
}  // namespace v1

struct WindowKvPolicyParams final : PolicyParams {
  // Defaults: policy.proto's [(field_default)], filled by WindowKvFromProto.
  uint32_t alpha = 0;
  uint32_t omega = 0;
  uint32_t top_p = 0;
  uint32_t gamma = 0;
  uint32_t lambda = 0;
  uint32_t mean_budget = 0;
  bool aggregation = false;
  std::vector<uint32_t> group_budgets;  // one per group of gamma layers
  std::string Summary() const override;
};

// A windowkv policy from validated parameters (budgets per layer follow the groups').
RetentionPolicy MakeWindowKvPolicy(const WindowKvPolicyParams& p, uint32_t num_layers);

// Validates the wire form for `layout`, fills its defaults and computes the groups'
// budgets; errors are INVALID_ARGUMENT naming the field under `field`.
absl::StatusOr<RetentionPolicy> WindowKvFromProto(const v1::WindowKvPolicy& in,
                                                  const KvLayout& layout, const std::string& field);

}  // namespace kvwarden
