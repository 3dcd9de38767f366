#include "cache_service/retention/h2o/h2o_policy.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/retention/h2o/h2o_strategy.h"
#include "kvwarden/v1/policy.pb.h"

namespace kvwarden {
namespace {

absl::Status Bad(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

}  // namespace

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

absl::StatusOr<RetentionPolicy> H2oFromProto(const v1::H2oPolicy& in, const KvLayout& layout, const std::string& f) {
  const kernels::H2oParams defaults;
  kernels::H2oParams p;
  p.recent = in.recent() ? in.recent() : defaults.recent;
  p.sinks = in.sinks();
  p.drop = in.drop();
  if (in.layer_budgets_size() != 0 && in.layer_budgets_size() != static_cast<int>(layout.num_layers)) {
    return Bad(f + ".layer_budgets", absl::StrFormat("has %d entries, the layout has %u layers",
                                                     in.layer_budgets_size(), layout.num_layers));
  }
  if (in.layer_budgets_size() == 0 && in.budget() == 0) return Bad(f + ".budget", "is required");
  std::vector<uint32_t> budgets(layout.num_layers, in.budget());
  for (int l = 0; l < in.layer_budgets_size(); ++l) budgets[l] = in.layer_budgets(l);
  for (uint32_t l = 0; l < layout.num_layers; ++l) {
    const uint32_t b = budgets[l];
    const std::string where = in.layer_budgets_size() ? absl::StrCat(f, ".layer_budgets[", l, "]") : f + ".budget";
    if (p.recent >= b) return Bad(f + ".recent", absl::StrFormat("%u must be < the budget %u", p.recent, b));
    if (p.sinks >= b) return Bad(f + ".sinks", absl::StrFormat("%u must be < the budget %u", p.sinks, b));
    if (!kernels::H2oProtectedFit({b, p.recent, p.drop, p.sinks})) {
      return Bad(where, absl::StrFormat("recent (%u) + sinks (%u) must be < the budget (%u)", p.recent, p.sinks, b));
    }
    if (p.drop > b) return Bad(f + ".drop", absl::StrFormat("%u is above the budget %u", p.drop, b));
  }
  p.budget = in.budget() != 0 ? in.budget() : budgets[0];
  return MakeH2oPolicy(p, std::move(budgets));
}

}  // namespace kvwarden
