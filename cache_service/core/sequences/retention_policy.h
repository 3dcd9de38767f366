#pragma once

// A sequence's retention policy, validated: which strategy decides (a policy under
// cache_service/retention/<name>/, found through retention/registry.h), the budget of each
// layer, and the policy's own parameters, which only its strategy reads. Core knows no
// policy by name. Plain data; immutable once the sequence exists.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvwarden {

class RetentionStrategy;

// What made retention drop tokens.
enum class RetentionCause { kStats, kReserve, kPressure };

// A policy's own parameters (defined in its folder). Immutable; shared between a
// sequence and its forks.
class PolicyParams {
 public:
  virtual ~PolicyParams() = default;
  // "B=256 w=400 r=10 m=128 sinks=0 scale=1": the parameters, for operators.
  virtual std::string Summary() const = 0;
};

struct RetentionPolicy {
  // Null: keep every token (RetentionStrategy's own defaults; the "full" policy).
  const RetentionStrategy* strategy = nullptr;
  // The slots a head of each layer may keep: one per layer, or one for every layer;
  // empty for a policy without budgets.
  std::vector<uint32_t> layer_budgets;
  std::shared_ptr<const PolicyParams> params;
  // The kvwarden.v1.RetentionPolicy it was made from, serialized (empty: full): what a
  // sequence carries to another daemon, which validates it again for its own pool.
  std::string wire;

  const RetentionStrategy& Strategy() const;
  // Slots a head of `layer` may keep; `max_tokens` for a policy without budgets.
  uint32_t LayerBudget(uint32_t layer, uint32_t max_tokens) const {
    if (layer_budgets.empty()) return max_tokens;
    return layer_budgets[layer_budgets.size() == 1 ? 0 : layer];
  }
  // "scissorhands", "full", ...
  std::string Name() const;
  // The name and the parameters: "scissorhands B=256 w=400 ...".
  std::string Summary() const;
  // The parameters as their policy's type (for its strategy, which made them).
  template <typename T>
  const T& Params() const {
    return static_cast<const T&>(*params);
  }
};

}  // namespace kvwarden
