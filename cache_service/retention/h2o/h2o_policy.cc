#include "cache_service/retention/h2o/h2o_policy.h"

#include "absl/strings/str_format.h"
#include "cache_service/retention/field_defaults.h"
#include "cache_service/retention/h2o/h2o_strategy.h"
#include "cache_service/retention/step_budgets.h"
#include "kvwarden/v1/policy.pb.h"

namespace kvwarden {
std::string H2oPolicyParams::Summary() const {
  return absl::StrFormat("B=%u r=%u m=%u sinks=%u", kernel.budget, kernel.recent,
                         kernel.drop == 0 ? kernel.budget / 2 : kernel.drop, kernel.sinks);
}

RetentionPolicy MakeH2oPolicy(const kernels::H2oParams& p, std::vector<uint32_t> layer_budgets) {
  auto params = std::make_shared<H2oPolicyParams>();
  params->kernel = p;
  RetentionPolicy policy;
  policy.strategy = &H2oStrategy::Get();
  policy.layer_budgets = std::move(layer_budgets);
  policy.params = std::move(params);
  return policy;
}

absl::StatusOr<RetentionPolicy> H2oFromProto(const v1::H2oPolicy& in, const KvLayout& layout,
                                             const std::string& f) {
  kernels::H2oParams p;
  p.recent = UintOrDefault(in, "recent");
  p.sinks = in.sinks();
  p.drop = in.drop();
  absl::StatusOr<std::vector<uint32_t>> budgets =
      StepBudgetsFromProto(in.budget(), in.layer_budgets(), p.recent, p.sinks, p.drop, layout, f);
  if (!budgets.ok()) return budgets.status();
  p.budget = in.budget() != 0 ? in.budget() : (*budgets)[0];
  return MakeH2oPolicy(p, *std::move(budgets));
}

}  // namespace kvwarden
