#pragma once

// The retention policies this daemon knows: one line each in registry.cc. A policy lives
// in its own folder here (strategy, per-sequence state, device glue, wire form,
// defaults); the README's "Adding a policy" lists everything one touches.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cache_service/core/memory/kv_layout.h"
#include "cache_service/core/sequences/retention_policy.h"
#include "cache_service/core/sequences/retention_strategy.h"

namespace kvwarden {

namespace v1 {
class RetentionPolicy;
}  // namespace v1

// Every policy's strategy, "full" first (metrics make each one's series up front).
const std::vector<const RetentionStrategy*>& RetentionPolicies();

// The strategy named `name`; null for a name no policy has.
const RetentionStrategy* FindRetentionPolicy(absl::string_view name);

// Validates a wire policy for a layout and fills its defaults. Errors are
// INVALID_ARGUMENT naming the field under `field` (e.g. "policy.scissorhands.recent").
absl::StatusOr<RetentionPolicy> PolicyFromProto(const v1::RetentionPolicy& in, const KvLayout& layout,
                                                const std::string& field);

}  // namespace kvwarden
