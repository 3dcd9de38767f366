#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "cache_service/core/kv_layout.h"
#include "cache_service/core/retention_policy.h"

namespace kvwarden {

namespace v1 {
class RetentionPolicy;
}  // namespace v1

// Validates a wire policy for a layout and fills its defaults. Errors are
// INVALID_ARGUMENT naming the field under `field` (e.g. "policy.scissorhands.recent").
absl::StatusOr<RetentionPolicy> PolicyFromProto(const v1::RetentionPolicy& in, const KvLayout& layout,
                                                const std::string& field);

}  // namespace kvwarden
