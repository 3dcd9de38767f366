#include "cache_service/retention/streaming/streaming_strategy.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "cache_service/core/sequences/sequence_compaction.h"
#include "kernels/streaming.h"

namespace kvwarden {
namespace {

// Slots a streaming head of `n` live slots keeps: the same rule as the kernels'.
std::vector<uint32_t> StreamingKept(uint32_t n, kernels::StreamingParams p) {
  std::vector<uint32_t> kept;
  for (uint32_t j = 0; j < n; ++j) {
    if (kernels::StreamingKeeps(j, n, p)) kept.push_back(j);
  }
  return kept;
}

uint32_t Sinks(const Sequence& seq) { return seq.policy.Params<StreamingPolicyParams>().kernel.sinks; }

}  // namespace

const StreamingStrategy& StreamingStrategy::Get() {
  static const StreamingStrategy strategy;
  return strategy;
}

absl::Status StreamingStrategy::CheckReserve(const Sequence& seq, uint32_t num_tokens) const {
  const kernels::StreamingParams sp{seq.Budget(0), Sinks(seq)};
  const uint32_t fullest = seq.FullestLayerSlots();
  if (uint64_t{fullest} + num_tokens > sp.budget && num_tokens > sp.budget - sp.sinks) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "num_tokens: %u new tokens do not fit a streaming budget of %u with %u sinks next to %u "
        "held", num_tokens, sp.budget, sp.sinks, fullest));
  }
  return absl::OkStatus();
}

uint32_t StreamingStrategy::KeptBefore(const Sequence& seq, uint32_t live, uint32_t num_tokens) const {
  const uint32_t budget = seq.Budget(0);
  return uint64_t{live} + num_tokens > budget ? budget - num_tokens : live;
}

void StreamingStrategy::MakeRoom(Sequence& seq, uint32_t num_tokens, std::vector<HeadRetention>* out) const {
  const KvLayout& l = seq.layout();
  // Keep the sinks and the newest slots so that the new tokens fit the budget.
  const kernels::StreamingParams room{seq.Budget(0) - num_tokens, Sinks(seq)};
  RetentionResult dropped;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    if (seq.LayerSlots(layer) <= room.budget) continue;
    std::vector<std::vector<uint32_t>> kept(l.num_kv_heads);
    for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
      kept[h] = StreamingKept(seq.slots[size_t{layer} * l.num_kv_heads + h].size(), room);
    }
    CompactLayer(seq, layer, kept, &dropped);
  }
  if (!dropped.changes.empty()) ++seq.epoch;
  for (HeadRetention& c : dropped.changes) out->push_back(std::move(c));
}

std::vector<uint32_t> StreamingStrategy::SqueezeKept(Sequence& seq, size_t, uint32_t live, uint32_t budget) const {
  return StreamingKept(live, {budget, std::min(Sinks(seq), budget - 1)});
}

}  // namespace kvwarden
