#include "cache_service/core/sequences/slot_map.h"

#include <algorithm>
#include <utility>

namespace kvwarden {

void SlotMap::Append(uint32_t first, uint32_t n) {
  if (identity_ && first != size_) {
    // A gap in positions: from now on positions are stored explicitly.
    positions_.resize(size_);
    for (uint32_t i = 0; i < size_; ++i) positions_[i] = i;
    identity_ = false;
  }
  if (!identity_) {
    for (uint32_t i = 0; i < n; ++i) positions_.push_back(first + i);
  }
  size_ += n;
}

void SlotMap::Retain(const std::vector<uint32_t>& kept_slots) {
  std::vector<uint32_t> kept(kept_slots.size());
  for (size_t i = 0; i < kept.size(); ++i) kept[i] = position(kept_slots[i]);
  positions_ = std::move(kept);
  size_ = static_cast<uint32_t>(positions_.size());
  identity_ = false;
}

uint32_t SlotMap::LowerBound(uint32_t pos) const {
  if (identity_) return std::min(pos, size_);
  return static_cast<uint32_t>(std::lower_bound(positions_.begin(), positions_.end(), pos) -
                               positions_.begin());
}

void SlotMap::Assign(std::vector<uint32_t> positions) {
  size_ = static_cast<uint32_t>(positions.size());
  identity_ = positions.empty() || positions.back() == size_ - 1;  // ascending and unique
  positions_ = identity_ ? std::vector<uint32_t>() : std::move(positions);
}

}  // namespace kvwarden
