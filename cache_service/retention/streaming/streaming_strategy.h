#pragma once

#include "cache_service/core/sequences/retention_strategy.h"
#include "cache_service/retention/streaming/streaming_policy.h"

namespace kvwarden {

// StreamingLLM: the first `sinks` tokens and the newest up to the budget. Room is made
// at ReserveSlots by dropping the oldest non-sink slots; takes no statistics.
class StreamingStrategy final : public RetentionStrategy {
 public:
  static const StreamingStrategy& Get();
  const char* name() const override { return "streaming"; }
  bool Evicts(RetentionCause cause) const override {
    return cause == RetentionCause::kReserve || cause == RetentionCause::kPressure;
  }
  absl::Status CheckReserve(const Sequence& seq, uint32_t num_tokens) const override
      ABSL_SHARED_LOCKS_REQUIRED(seq.mu);
  uint32_t KeptBefore(const Sequence& seq, uint32_t live, uint32_t num_tokens) const override
      ABSL_SHARED_LOCKS_REQUIRED(seq.mu);
  bool ReserveCompacts() const override { return true; }
  void MakeRoom(Sequence& seq, uint32_t num_tokens, std::vector<HeadRetention>* dropped) const override ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);
  bool Squeezable() const override { return true; }
  uint32_t SqueezeFloor(const RetentionPolicy& policy) const override {
    return policy.Params<StreamingPolicyParams>().kernel.sinks + 1;
  }

 protected:
  std::vector<uint32_t> SqueezeKept(Sequence& seq, size_t lh, uint32_t live, uint32_t budget) const override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);
};

}  // namespace kvwarden
