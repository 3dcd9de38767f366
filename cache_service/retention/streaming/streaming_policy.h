#pragma once

// StreamingLLM (Xiao et al., ICLR 2024, "Efficient Streaming Language Models with
// Attention Sinks"): each head keeps the first `sinks` tokens and the newest ones, up to
// the budget. Room is made when slots are reserved; no statistics.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "cache_service/core/memory/kv_layout.h"
#include "cache_service/core/sequences/retention_policy.h"
#include "kernels/streaming.h"

namespace kvwarden {

namespace v1 {
class StreamingPolicy;
}  // namespace v1

struct StreamingPolicyParams final : PolicyParams {
  kernels::StreamingParams kernel;
  std::string Summary() const override;
};

// A streaming policy (for tests and in-process callers; not validated).
RetentionPolicy MakeStreamingPolicy(const kernels::StreamingParams& p);

// Validates the wire form and fills its defaults (the kernel's StreamingParams).
absl::StatusOr<RetentionPolicy> StreamingFromProto(const v1::StreamingPolicy& in, const KvLayout& layout,
                                                   const std::string& field);

}  // namespace kvwarden
