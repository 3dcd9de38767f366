#include "cache_service/core/retention_policy.h"

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace kvwarden {

uint32_t RetentionPolicy::LayerBudget(uint32_t layer, uint32_t max_tokens) const {
  switch (kind) {
    case PolicyKind::kFull: return max_tokens;
    case PolicyKind::kStreaming: return streaming.budget;
    case PolicyKind::kScissorhands: return layer_budgets[layer];
    case PolicyKind::kWindowKv: return windowkv.group_budgets[layer / windowkv.gamma];
  }
  return max_tokens;
}

const char* PolicyKindName(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kFull: return "full";
    case PolicyKind::kStreaming: return "streaming";
    case PolicyKind::kScissorhands: return "scissorhands";
    case PolicyKind::kWindowKv: return "windowkv";
  }
  return "?";
}

std::string RetentionPolicy::Name() const { return PolicyKindName(kind); }

std::string RetentionPolicy::Summary() const {
  switch (kind) {
    case PolicyKind::kFull: return "full";
    case PolicyKind::kStreaming:
      return absl::StrFormat("streaming B=%u sinks=%u", streaming.budget, streaming.sinks);
    case PolicyKind::kScissorhands: {
      const auto& p = scissorhands;
      return absl::StrFormat("scissorhands B=%u w=%u r=%u m=%u sinks=%u scale=%g", p.budget,
                             p.window, p.recent, p.drop == 0 ? p.budget / 2 : p.drop, p.sinks,
                             threshold_scale);
    }
    case PolicyKind::kWindowKv: {
      const auto& w = windowkv;
      return absl::StrFormat("windowkv alpha=%u omega=%u task=%s top_p=%u gamma=%u lambda=%u "
                             "B_mean=%u group budgets [%s]",
                             w.alpha, w.omega, w.aggregation ? "aggregation" : "localization",
                             w.top_p, w.gamma, w.lambda, w.mean_budget,
                             absl::StrJoin(w.group_budgets, ","));
    }
  }
  return "?";
}

}  // namespace kvwarden
