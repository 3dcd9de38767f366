#include "cache_service/retention/scissorhands/scissorhands_policy.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/retention/field_defaults.h"
#include "cache_service/retention/scissorhands/scissorhands_strategy.h"
#include "cache_service/retention/step_budgets.h"
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

RetentionPolicy MakeScissorhandsPolicy(const kernels::ScissorhandsParams& p,
                                       std::vector<uint32_t> layer_budgets, float threshold_scale) {
  auto params = std::make_shared<ScissorhandsPolicyParams>();
  params->kernel = p;
  params->threshold_scale = threshold_scale;
  RetentionPolicy policy;
  policy.strategy = &ScissorhandsStrategy::Get();
  policy.layer_budgets = std::move(layer_budgets);
  policy.params = std::move(params);
  return policy;
}

absl::StatusOr<RetentionPolicy> ScissorhandsFromProto(const v1::ScissorhandsPolicy& in,
                                                      const KvLayout& layout,
                                                      const std::string& f) {
  kernels::ScissorhandsParams p;
  p.window = UintOrDefault(in, "window");
  p.recent = UintOrDefault(in, "recent");
  p.sinks = in.sinks();
  p.drop = in.drop();
  const float scale = FloatOrDefault(in, "threshold_scale");
  if (p.window > kernels::kScissorhandsMaxWindow) {
    return Bad(f + ".window",
               absl::StrFormat("%u is above %u", p.window, kernels::kScissorhandsMaxWindow));
  }
  if (!(scale > 0) || !std::isfinite(scale))
    return Bad(f + ".threshold_scale", "must be a finite value > 0");
  absl::StatusOr<std::vector<uint32_t>> budgets =
      StepBudgetsFromProto(in.budget(), in.layer_budgets(), p.recent, p.sinks, p.drop, layout, f);
  if (!budgets.ok()) return budgets.status();
  p.budget = in.budget() != 0 ? in.budget() : (*budgets)[0];
  return MakeScissorhandsPolicy(p, *std::move(budgets), scale);
}

}  // namespace kvwarden
