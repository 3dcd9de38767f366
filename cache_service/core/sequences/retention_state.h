#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwarden {

// One head's compaction: head `lh` kept `kept` (ascending) of its `old_live` slots,
// moved to the front.
struct HeadCompaction {
  uint32_t lh = 0;
  const std::vector<uint32_t>* kept = nullptr;
  uint32_t old_live = 0;
};

// One figure a policy measures on a head, for operators (kvwctl seq show), e.g.
// {"low_max", 3}.
struct HeadFigure {
  std::string name;
  double value = 0;
  bool operator==(const HeadFigure&) const = default;
};

// What a retention policy keeps per sequence beside the slots (Scissorhands: each
// head's low-attention history, in the pool's memory). Owned by its Sequence and
// guarded by the sequence's mutex; `lh` is layer * num_kv_heads + head.
class RetentionState {
 public:
  virtual ~RetentionState() = default;
  // A fork's copy (device memory can run out).
  virtual absl::StatusOr<std::unique_ptr<RetentionState>> Clone() const = 0;
  // Room for heads of up to `slots` live slots; called before a reservation commits,
  // so the only step that can fail comes before anything changed. New slots start clean.
  virtual absl::Status Reserve(uint32_t slots) = 0;
  // The heads of one layer that changed, after their slots moved: one call per layer so
  // a device-resident state follows them all with one synchronisation.
  virtual void Compacted(const std::vector<HeadCompaction>& heads) = 0;
  // For operators: what the policy measures on each head ([lh], the same names for every
  // head), given each head's live slot count; empty when it measures nothing. One call
  // per sequence, so a device-resident state is read once.
  virtual std::vector<std::vector<HeadFigure>> Describe(const std::vector<uint32_t>& live) const {
    (void)live;
    return {};
  }
  virtual uint64_t decode_steps() const { return 0; }
  // The state as bytes (a versioned, checksummed encoding its strategy's DecodeState
  // reads back): what a sequence carries to another daemon or across a restart.
  virtual absl::StatusOr<std::string> Encode() const = 0;
};

}  // namespace kvwarden
