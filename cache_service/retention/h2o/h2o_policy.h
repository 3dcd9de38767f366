#pragma once

// H2O, the Heavy-Hitter Oracle (kernels/h2o.h): each (layer, head) keeps at most B slots;
// over budget it drops the slots that received the least attention in total, never the
// `recent` newest nor the sinks. Fed by dense decode-step attention rows.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cache_service/core/memory/kv_layout.h"
#include "cache_service/core/sequences/retention_policy.h"
#include "kernels/h2o.h"

namespace kvwarden {

namespace v1 {
class H2oPolicy;
}  // namespace v1

struct H2oPolicyParams final : PolicyParams {
  kernels::H2oParams kernel;  // .budget: the default B (layers may differ)
  std::string Summary() const override;
};

// An h2o policy with budgets per layer (one, or one per layer); not validated.
RetentionPolicy MakeH2oPolicy(const kernels::H2oParams& p, std::vector<uint32_t> layer_budgets);

// Validates the wire form for `layout` and fills its defaults (the kernel's H2oParams);
// errors are INVALID_ARGUMENT naming the field under `field`.
absl::StatusOr<RetentionPolicy> H2oFromProto(const v1::H2oPolicy& in, const KvLayout& layout,
                                             const std::string& field);

}  // namespace kvwarden
