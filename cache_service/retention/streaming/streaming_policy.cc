#include "cache_service/retention/streaming/streaming_policy.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/retention/field_defaults.h"
#include "cache_service/retention/streaming/streaming_strategy.h"
#include "kvwarden/v1/policy.pb.h"

namespace kvwarden {

std::string StreamingPolicyParams::Summary() const {
  return absl::StrFormat("B=%u sinks=%u", kernel.budget, kernel.sinks);
}

RetentionPolicy MakeStreamingPolicy(const kernels::StreamingParams& p) {
  auto params = std::make_shared<StreamingPolicyParams>();
  params->kernel = p;
  RetentionPolicy policy;
  policy.strategy = &StreamingStrategy::Get();
  policy.layer_budgets = {p.budget};
  policy.params = std::move(params);
  return policy;
}

absl::StatusOr<RetentionPolicy> StreamingFromProto(const v1::StreamingPolicy& in,
                                                   const KvLayout& layout, const std::string& f) {
  kernels::StreamingParams p;
  p.budget = in.budget();
  p.sinks = UintOrDefault(in, "sinks");
  if (in.budget() == 0) return absl::InvalidArgumentError(absl::StrCat(f, ".budget: is required"));
  if (p.sinks >= p.budget) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s.sinks: %u must be < the budget %u", f, p.sinks, p.budget));
  }
  (void)layout;
  return MakeStreamingPolicy(p);
}

}  // namespace kvwarden
