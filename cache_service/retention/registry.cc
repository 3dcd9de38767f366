#include "cache_service/retention/registry.h"

#include "absl/strings/str_cat.h"
#include "cache_service/retention/h2o/h2o_policy.h"
#include "cache_service/retention/h2o/h2o_strategy.h"
#include "cache_service/retention/scissorhands/scissorhands_policy.h"
#include "cache_service/retention/scissorhands/scissorhands_strategy.h"
#include "cache_service/retention/streaming/streaming_policy.h"
#include "cache_service/retention/streaming/streaming_strategy.h"
#include "cache_service/retention/windowkv/windowkv_policy.h"
#include "cache_service/retention/windowkv/windowkv_strategy.h"
#include "kvwarden/v1/policy.pb.h"

namespace kvwarden {

const std::vector<const RetentionStrategy*>& RetentionPolicies() {
  static const std::vector<const RetentionStrategy*> policies = {
      &RetentionStrategy::KeepAll(), &StreamingStrategy::Get(), &ScissorhandsStrategy::Get(),
      &WindowKvStrategy::Get(),      &H2oStrategy::Get(),
  };
  return policies;
}

const RetentionStrategy* FindRetentionPolicy(absl::string_view name) {
  for (const RetentionStrategy* s : RetentionPolicies()) {
    if (name == s->name()) return s;
  }
  return nullptr;
}

namespace {

absl::StatusOr<RetentionPolicy> Validate(const v1::RetentionPolicy& in, const KvLayout& layout,
                                         const std::string& field) {
  switch (in.policy_case()) {
    case v1::RetentionPolicy::POLICY_NOT_SET:
    case v1::RetentionPolicy::kFull:
      return RetentionPolicy{};
    case v1::RetentionPolicy::kStreaming:
      return StreamingFromProto(in.streaming(), layout, field + ".streaming");
    case v1::RetentionPolicy::kScissorhands:
      return ScissorhandsFromProto(in.scissorhands(), layout, field + ".scissorhands");
    case v1::RetentionPolicy::kWindowkv:
      return WindowKvFromProto(in.windowkv(), layout, field + ".windowkv");
    case v1::RetentionPolicy::kH2O:
      return H2oFromProto(in.h2o(), layout, field + ".h2o");
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": unknown policy ", static_cast<int>(in.policy_case())));
}

}  // namespace

absl::StatusOr<RetentionPolicy> PolicyFromProto(const v1::RetentionPolicy& in,
                                                const KvLayout& layout, const std::string& field) {
  absl::StatusOr<RetentionPolicy> policy = Validate(in, layout, field);
  if (policy.ok() && policy->strategy != nullptr) policy->wire = in.SerializeAsString();
  return policy;
}

}  // namespace kvwarden
