#include "cache_service/retention/windowkv/windowkv_policy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cache_service/retention/field_defaults.h"
#include "cache_service/retention/windowkv/windowkv_strategy.h"
#include "kernels/windowkv.h"
#include "kvwarden/v1/policy.pb.h"

namespace kvwarden {
namespace {

absl::Status Bad(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

}  // namespace

std::string WindowKvPolicyParams::Summary() const {
  return absl::StrFormat(
      "alpha=%u omega=%u task=%s top_p=%u gamma=%u lambda=%u B_mean=%u group budgets [%s]", alpha,
      omega, aggregation ? "aggregation" : "localization", top_p, gamma, lambda, mean_budget,
      absl::StrJoin(group_budgets, ","));
}

RetentionPolicy MakeWindowKvPolicy(const WindowKvPolicyParams& p, uint32_t num_layers) {
  RetentionPolicy policy;
  policy.strategy = &WindowKvStrategy::Get();
  policy.layer_budgets.resize(num_layers);
  for (uint32_t l = 0; l < num_layers; ++l) policy.layer_budgets[l] = p.group_budgets[l / p.gamma];
  policy.params = std::make_shared<WindowKvPolicyParams>(p);
  return policy;
}

absl::StatusOr<RetentionPolicy> WindowKvFromProto(const v1::WindowKvPolicy& in,
                                                  const KvLayout& layout, const std::string& f) {
  WindowKvPolicyParams w;
  w.alpha = UintOrDefault(in, "alpha");
  w.omega = UintOrDefault(in, "omega");
  if (w.omega == 0 || w.omega > kernels::kWindowKvMaxOmega) {
    return Bad(f + ".omega",
               absl::StrFormat("%u is outside [1, %u]", w.omega, kernels::kWindowKvMaxOmega));
  }
  switch (in.task()) {
    case v1::WindowKvPolicy::TASK_UNSPECIFIED:
    case v1::WindowKvPolicy::TASK_LOCALIZATION:
      w.aggregation = false;
      break;
    case v1::WindowKvPolicy::TASK_AGGREGATION:
      w.aggregation = true;
      break;
    default:
      return Bad(f + ".task", absl::StrCat("unknown task ", static_cast<int>(in.task())));
  }
  w.top_p = in.top_p() ? in.top_p() : (w.aggregation ? (w.omega + 1) / 2 : w.omega);
  if (w.top_p > w.omega)
    return Bad(f + ".top_p", absl::StrFormat("%u is above omega %u", w.top_p, w.omega));
  w.gamma =
      in.gamma() ? in.gamma() : std::min<uint32_t>(UintOrDefault(in, "gamma"), layout.num_layers);
  if (layout.num_layers % w.gamma != 0) {
    return Bad(f + ".gamma", absl::StrFormat("%u does not divide the layer count %u", w.gamma,
                                             layout.num_layers));
  }
  w.lambda = UintOrDefault(in, "lambda");
  if (in.mean_budget() == 0) return Bad(f + ".mean_budget", "is required");
  w.mean_budget = in.mean_budget();
  const uint32_t groups = layout.num_layers / w.gamma;
  // Budgets in 64-bit signed arithmetic (gamma > lambda makes them grow with depth);
  // each must be a positive 32-bit count above alpha.
  if (groups > 1 && uint64_t{w.mean_budget} * w.gamma / w.lambda >= 2 * uint64_t{w.mean_budget}) {
    return Bad(f + ".lambda", absl::StrFormat("mean_budget (%u) * gamma (%u) / lambda (%u) is at "
                                              "least 2 * mean_budget: the first group's "
                                              "budget would be <= 0",
                                              w.mean_budget, w.gamma, w.lambda));
  }
  std::vector<int64_t> budgets(groups);
  kernels::WindowKvGroupBudgets(w.mean_budget, w.gamma, w.lambda, groups, budgets.data());
  w.group_budgets.resize(groups);
  for (uint32_t g = 0; g < groups; ++g) {
    if (budgets[g] <= int64_t{w.alpha} || budgets[g] > int64_t{UINT32_MAX}) {
      return Bad(f + ".mean_budget",
                 absl::StrFormat("group %u gets a budget of %d, not in (alpha %u, %u]", g,
                                 budgets[g], w.alpha, UINT32_MAX));
    }
    w.group_budgets[g] = static_cast<uint32_t>(budgets[g]);
  }
  return MakeWindowKvPolicy(w, layout.num_layers);
}

}  // namespace kvwarden
