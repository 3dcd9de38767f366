#include <cstring>

#include "kernels/compaction.h"

namespace kvwarden::kernels {

KernelStatus CompactLayerCpu(const PagedLayerView& layer, const uint32_t* kept_offsets,
                             const uint32_t* kept_slots) {
  if (kept_offsets == nullptr || layer.geometry.page_tokens == 0) {
    return KernelStatus::kInvalidArgument;
  }
  const size_t tb = layer.geometry.token_bytes();
  for (uint32_t h = 0; h < layer.geometry.num_kv_heads; ++h) {
    uint32_t prev = 0;
    for (uint32_t i = kept_offsets[h]; i < kept_offsets[h + 1]; ++i) {
      const uint32_t to = i - kept_offsets[h], from = kept_slots[i];
      if (from >= layer.capacity_slots() || (i > kept_offsets[h] && from <= prev)) {
        return KernelStatus::kInvalidArgument;
      }
      prev = from;
      // Ascending kept slots mean from >= to: a forward pass never overwrites a source.
      if (from != to) {
        std::memmove(layer.k(h, to), layer.k(h, from), tb);
        std::memmove(layer.v(h, to), layer.v(h, from), tb);
      }
    }
  }
  return KernelStatus::kOk;
}

}  // namespace kvwarden::kernels
