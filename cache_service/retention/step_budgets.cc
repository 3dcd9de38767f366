#include "cache_service/retention/step_budgets.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvwarden {
namespace {

absl::Status Bad(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

}  // namespace

absl::StatusOr<std::vector<uint32_t>> StepBudgetsFromProto(uint32_t budget,
                                                           absl::Span<const uint32_t> layer_budgets,
                                                           uint32_t recent, uint32_t sinks,
                                                           uint32_t drop, const KvLayout& layout,
                                                           const std::string& f) {
  if (!layer_budgets.empty() && layer_budgets.size() != layout.num_layers) {
    return Bad(f + ".layer_budgets", absl::StrFormat("has %d entries, the layout has %u layers",
                                                     layer_budgets.size(), layout.num_layers));
  }
  if (layer_budgets.empty() && budget == 0) return Bad(f + ".budget", "is required");
  std::vector<uint32_t> budgets(layout.num_layers, budget);
  for (size_t l = 0; l < layer_budgets.size(); ++l) budgets[l] = layer_budgets[l];
  for (uint32_t l = 0; l < layout.num_layers; ++l) {
    const uint32_t b = budgets[l];
    const std::string where =
        layer_budgets.empty() ? f + ".budget" : absl::StrCat(f, ".layer_budgets[", l, "]");
    // Each field on its own first, then the sum in 64 bits: a 32-bit sum wraps.
    if (recent >= b)
      return Bad(f + ".recent", absl::StrFormat("%u must be < the budget %u", recent, b));
    if (sinks >= b)
      return Bad(f + ".sinks", absl::StrFormat("%u must be < the budget %u", sinks, b));
    if (uint64_t{recent} + sinks >= b) {
      return Bad(where, absl::StrFormat("recent (%u) + sinks (%u) must be < the budget (%u)",
                                        recent, sinks, b));
    }
    if (drop > b) return Bad(f + ".drop", absl::StrFormat("%u is above the budget %u", drop, b));
  }
  return budgets;
}

}  // namespace kvwarden
