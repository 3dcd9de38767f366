#pragma once

// Scissorhands (Liu et al., NeurIPS 2023, "Scissorhands: Exploiting the Persistence of
// Importance Hypothesis for LLM KV Cache Compression at Test Time"): each (layer, head)
// keeps at most B slots; over budget, it drops the m slots that were least often among
// the important ones (attention >= scale / attended) in the last w decode steps, never
// the r newest nor the sinks. The README's "Retention policies" has the worked example.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cache_service/core/memory/kv_layout.h"
#include "cache_service/core/sequences/retention_policy.h"
#include "kernels/scissorhands.h"

namespace kvwarden {

namespace v1 {
class ScissorhandsPolicy;
}  // namespace v1

struct ScissorhandsPolicyParams final : PolicyParams {
  kernels::ScissorhandsParams kernel;  // .budget: the default B (layers may differ)
  float threshold_scale = 1.0f;
  std::string Summary() const override;
};

// A scissorhands policy with budgets per layer (tests and in-process callers; the wire
// form goes through ScissorhandsFromProto, which validates).
RetentionPolicy MakeScissorhandsPolicy(const kernels::ScissorhandsParams& p, std::vector<uint32_t> layer_budgets,
                                       float threshold_scale = 1.0f);

// Validates the wire form for `layout` and fills its defaults (the kernel's
// ScissorhandsParams); errors are INVALID_ARGUMENT naming the field under `field`.
absl::StatusOr<RetentionPolicy> ScissorhandsFromProto(const v1::ScissorhandsPolicy& in, const KvLayout& layout,
                                                      const std::string& field);

}  // namespace kvwarden
