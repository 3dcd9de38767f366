#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace kvwarden::kernels {

// Per-head arrays packed head after head: head h owns [offsets[h], offsets[h + 1]).
// Used for live slots of one layer (heads hold different counts after eviction).
struct Segments {
  uint32_t num_heads = 0;
  const uint32_t* offsets = nullptr;  // [num_heads + 1]

  KVW_HOST_DEVICE uint32_t begin(uint32_t h) const { return offsets[h]; }
  KVW_HOST_DEVICE uint32_t size(uint32_t h) const { return offsets[h + 1] - offsets[h]; }
  KVW_HOST_DEVICE uint32_t total() const { return offsets[num_heads]; }
};

}  // namespace kvwarden::kernels
