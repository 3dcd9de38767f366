#pragma once

#include <cstdint>
#include <vector>

namespace kvwarden {

// The original token position of every live slot of one (layer, head), in position
// order. Until retention drops a slot, slot i holds position i and nothing is stored,
// so an uncompressed 32-layer x 8-head sequence costs no per-token memory here.
// Not thread-safe (guarded by the owning Sequence's lock).
class SlotMap {
 public:
  uint32_t size() const { return size_; }
  bool identity() const { return identity_; }
  uint32_t position(uint32_t slot) const { return identity_ ? slot : positions_[slot]; }

  // Appends positions [first, first + n); `first` must exceed every live position.
  void Append(uint32_t first, uint32_t n);
  // First slot whose position is >= pos (size() when none).
  uint32_t LowerBound(uint32_t pos) const;
  // Keeps only `kept_slots` (ascending); kept slot i becomes slot i.
  void Retain(const std::vector<uint32_t>& kept_slots);
  // The live positions, ascending and unique (checked by the caller): what a migrated
  // sequence's head held on the daemon it came from.
  void Assign(std::vector<uint32_t> positions);
  // The live positions, empty while identity() (slot i holds position i).
  const std::vector<uint32_t>& positions() const { return positions_; }

 private:
  bool identity_ = true;
  uint32_t size_ = 0;
  std::vector<uint32_t> positions_;  // used once !identity_
};

}  // namespace kvwarden
