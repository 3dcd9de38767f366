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

KernelStatus CompactRowsCpu(uint32_t* rows, uint32_t row_words, const uint32_t* head_offsets,
                            uint32_t num_heads, const uint32_t* kept_offsets,
                            const uint32_t* kept_slots) {
  // Heads are packed: the compacted head h starts at the sum of earlier kept counts,
  // never after its old start, so a forward pass is safe here too.
  for (uint32_t h = 0; h < num_heads; ++h) {
    for (uint32_t i = kept_offsets[h]; i < kept_offsets[h + 1]; ++i) {
      const size_t from = size_t{head_offsets[h] + kept_slots[i]} * row_words;
      const size_t to = size_t{i} * row_words;
      if (from != to) std::memmove(rows + to, rows + from, row_words * sizeof(uint32_t));
    }
  }
  return KernelStatus::kOk;
}

}  // namespace kvwarden::kernels
