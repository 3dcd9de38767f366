#include "cache_service/retention/scissorhands/scissorhands_policy.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/retention/scissorhands/scissorhands_strategy.h"
#include "kvwarden/v1/policy.pb.h"

namespace kvwarden {
namespace {

absl::Status Bad(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

}  // namespace

std::string ScissorhandsPolicyParams::Summary() const {
  const auto& p = kernel;
  return absl::StrFormat("B=%u w=%u r=%u m=%u sinks=%u scale=%g", p.budget, p.window, p.recent,
                         p.drop == 0 ? p.budget / 2 : p.drop, p.sinks, threshold_scale);
}

RetentionPolicy MakeScissorhandsPolicy(const kernels::ScissorhandsParams& p, std::vector<uint32_t> layer_budgets,
                                       float threshold_scale) {
  auto params = std::make_shared<ScissorhandsPolicyParams>();
  params->kernel = p;
  params->threshold_scale = threshold_scale;
  RetentionPolicy policy;
  policy.strategy = &ScissorhandsStrategy::Get();
  policy.layer_budgets = std::move(layer_budgets);
  policy.params = std::move(params);
  return policy;
}

absl::StatusOr<RetentionPolicy> ScissorhandsFromProto(const v1::ScissorhandsPolicy& in, const KvLayout& layout,
                                                      const std::string& f) {
  const kernels::ScissorhandsParams defaults;
  kernels::ScissorhandsParams p;
  p.window = in.window() ? in.window() : defaults.window;
  p.recent = in.recent() ? in.recent() : defaults.recent;
  p.sinks = in.sinks();
  p.drop = in.drop();
  const float scale = in.threshold_scale() != 0 ? in.threshold_scale() : 1.0f;
  if (p.window > kernels::kScissorhandsMaxWindow) {
    return Bad(f + ".window", absl::StrFormat("%u is above %u", p.window, kernels::kScissorhandsMaxWindow));
  }
  if (!(scale > 0) || !std::isfinite(scale)) return Bad(f + ".threshold_scale", "must be a finite value > 0");
  if (in.layer_budgets_size() != 0 && in.layer_budgets_size() != static_cast<int>(layout.num_layers)) {
    return Bad(f + ".layer_budgets", absl::StrFormat("has %d entries, the layout has %u layers",
                                                     in.layer_budgets_size(), layout.num_layers));
  }
  if (in.layer_budgets_size() == 0 && in.budget() == 0) return Bad(f + ".budget", "is required");
  p.budget = in.budget();
  std::vector<uint32_t> budgets(layout.num_layers, in.budget());
  for (int l = 0; l < in.layer_budgets_size(); ++l) budgets[l] = in.layer_budgets(l);
  for (uint32_t l = 0; l < layout.num_layers; ++l) {
    const uint32_t b = budgets[l];
    const std::string where = in.layer_budgets_size() ? absl::StrCat(f, ".layer_budgets[", l, "]") : f + ".budget";
    // Each field on its own first, then the sum in 64 bits: a 32-bit sum wraps.
    if (p.recent >= b) return Bad(f + ".recent", absl::StrFormat("%u must be < the budget %u", p.recent, b));
    if (p.sinks >= b) return Bad(f + ".sinks", absl::StrFormat("%u must be < the budget %u", p.sinks, b));
    if (!kernels::ScissorhandsProtectedFit({b, p.window, p.recent, p.drop, p.sinks})) {
      return Bad(where, absl::StrFormat("recent (%u) + sinks (%u) must be < the budget (%u)", p.recent,
                                        p.sinks, b));
    }
    if (p.drop > b) return Bad(f + ".drop", absl::StrFormat("%u is above the budget %u", p.drop, b));
  }
  if (p.budget == 0) p.budget = budgets[0];
  return MakeScissorhandsPolicy(p, std::move(budgets), scale);
}

}  // namespace kvwarden
