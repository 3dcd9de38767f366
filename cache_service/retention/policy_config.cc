#include "cache_service/retention/policy_config.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/scissorhands.h"
#include "kernels/windowkv.h"
#include "kvwarden/v1/policy.pb.h"

namespace kvwarden {
namespace {

absl::Status Bad(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

absl::Status Scissorhands(const v1::ScissorhandsPolicy& in, const KvLayout& layout,
                          const std::string& f, RetentionPolicy* out) {
  auto& p = out->scissorhands;
  p.window = in.window() ? in.window() : 400;
  p.recent = in.recent() ? in.recent() : 10;
  p.sinks = in.sinks();
  p.drop = in.drop();
  out->threshold_scale = in.threshold_scale() != 0 ? in.threshold_scale() : 1.0f;
  if (p.window > kernels::kScissorhandsMaxWindow) {
    return Bad(f + ".window", absl::StrFormat("%u is above %u", p.window, kernels::kScissorhandsMaxWindow));
  }
  if (!(out->threshold_scale > 0) || !std::isfinite(out->threshold_scale)) {
    return Bad(f + ".threshold_scale", "must be a finite value > 0");
  }
  if (in.layer_budgets_size() != 0 && in.layer_budgets_size() != static_cast<int>(layout.num_layers)) {
    return Bad(f + ".layer_budgets", absl::StrFormat("has %d entries, the layout has %u layers",
                                                     in.layer_budgets_size(), layout.num_layers));
  }
  if (in.layer_budgets_size() == 0 && in.budget() == 0) return Bad(f + ".budget", "is required");
  p.budget = in.budget();
  out->layer_budgets.assign(layout.num_layers, in.budget());
  for (int l = 0; l < in.layer_budgets_size(); ++l) out->layer_budgets[l] = in.layer_budgets(l);
  for (uint32_t l = 0; l < layout.num_layers; ++l) {
    const uint32_t b = out->layer_budgets[l];
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
  if (p.budget == 0) p.budget = out->layer_budgets[0];
  return absl::OkStatus();
}

absl::Status WindowKv(const v1::WindowKvPolicy& in, const KvLayout& layout, const std::string& f,
                      RetentionPolicy* out) {
  WindowKvSpec& w = out->windowkv;
  w.alpha = in.alpha() ? in.alpha() : 8;
  w.omega = in.has_omega() ? in.omega() : 8;
  if (w.omega == 0 || w.omega > kernels::kWindowKvMaxOmega) {
    return Bad(f + ".omega", absl::StrFormat("%u is outside [1, %u]", w.omega, kernels::kWindowKvMaxOmega));
  }
  switch (in.task()) {
    case v1::WindowKvPolicy::TASK_UNSPECIFIED:
    case v1::WindowKvPolicy::TASK_LOCALIZATION: w.aggregation = false; break;
    case v1::WindowKvPolicy::TASK_AGGREGATION: w.aggregation = true; break;
    default: return Bad(f + ".task", absl::StrCat("unknown task ", static_cast<int>(in.task())));
  }
  w.top_p = in.top_p() ? in.top_p() : (w.aggregation ? (w.omega + 1) / 2 : w.omega);
  if (w.top_p > w.omega) return Bad(f + ".top_p", absl::StrFormat("%u is above omega %u", w.top_p, w.omega));
  w.gamma = in.gamma() ? in.gamma() : std::min<uint32_t>(8, layout.num_layers);
  if (layout.num_layers % w.gamma != 0) {
    return Bad(f + ".gamma", absl::StrFormat("%u does not divide the layer count %u", w.gamma, layout.num_layers));
  }
  w.lambda = in.lambda() ? in.lambda() : 14;
  if (in.mean_budget() == 0) return Bad(f + ".mean_budget", "is required");
  w.mean_budget = in.mean_budget();
  const uint32_t groups = layout.num_layers / w.gamma;
  // Budgets in 64-bit signed arithmetic (gamma > lambda makes them grow with depth);
  // each must be a positive 32-bit count above alpha.
  if (groups > 1 && uint64_t{w.mean_budget} * w.gamma / w.lambda >= 2 * uint64_t{w.mean_budget}) {
    return Bad(f + ".lambda", absl::StrFormat(
        "mean_budget (%u) * gamma (%u) / lambda (%u) is at least 2 * mean_budget: the first group's "
        "budget would be <= 0", w.mean_budget, w.gamma, w.lambda));
  }
  std::vector<int64_t> budgets(groups);
  kernels::WindowKvGroupBudgets(w.mean_budget, w.gamma, w.lambda, groups, budgets.data());
  w.group_budgets.resize(groups);
  for (uint32_t g = 0; g < groups; ++g) {
    if (budgets[g] <= int64_t{w.alpha} || budgets[g] > int64_t{UINT32_MAX}) {
      return Bad(f + ".mean_budget", absl::StrFormat("group %u gets a budget of %d, not in (alpha %u, %u]",
                                                     g, budgets[g], w.alpha, UINT32_MAX));
    }
    w.group_budgets[g] = static_cast<uint32_t>(budgets[g]);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RetentionPolicy> PolicyFromProto(const v1::RetentionPolicy& in, const KvLayout& layout,
                                                const std::string& field) {
  RetentionPolicy out;
  switch (in.policy_case()) {
    case v1::RetentionPolicy::POLICY_NOT_SET:
    case v1::RetentionPolicy::kFull: out.kind = PolicyKind::kFull; break;
    case v1::RetentionPolicy::kStreaming: {
      out.kind = PolicyKind::kStreaming;
      const auto& s = in.streaming();
      out.streaming.budget = s.budget();
      out.streaming.sinks = s.has_sinks() ? s.sinks() : 4;
      if (s.budget() == 0) return Bad(field + ".streaming.budget", "is required");
      if (out.streaming.sinks >= s.budget()) {
        return Bad(field + ".streaming.sinks",
                   absl::StrFormat("%u must be < the budget %u", out.streaming.sinks, s.budget()));
      }
      break;
    }
    case v1::RetentionPolicy::kScissorhands:
      out.kind = PolicyKind::kScissorhands;
      if (absl::Status s = Scissorhands(in.scissorhands(), layout, field + ".scissorhands", &out); !s.ok()) return s;
      break;
    case v1::RetentionPolicy::kWindowkv:
      out.kind = PolicyKind::kWindowKv;
      if (absl::Status s = WindowKv(in.windowkv(), layout, field + ".windowkv", &out); !s.ok()) return s;
      break;
  }
  return out;
}

}  // namespace kvwarden
