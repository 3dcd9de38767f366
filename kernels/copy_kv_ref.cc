#include <algorithm>
#include <cstring>

#include "kernels/copy_kv.h"

namespace kvwarden::kernels {

bool HeadRangesFit(const PageGeometry& geometry, uint32_t num_pages, HeadSlotRanges ranges) {
  if (ranges.begin == nullptr || ranges.count == nullptr) return false;
  const uint64_t capacity = uint64_t{num_pages} * geometry.page_tokens;
  for (uint32_t h = 0; h < geometry.num_kv_heads; ++h) {
    if (uint64_t{ranges.begin[h]} + ranges.count[h] > capacity) return false;
  }
  return true;
}

KernelStatus CopyKvCpu(const PagedLayerView& layer, HeadSlotRanges ranges,
                       CopyDirection direction, uint8_t* k_dense, uint8_t* v_dense) {
  const PageGeometry& g = layer.geometry;
  if (g.page_tokens == 0 || g.token_bytes() == 0 || k_dense == nullptr || v_dense == nullptr ||
      !HeadRangesFit(g, layer.num_pages, ranges)) {
    return KernelStatus::kInvalidArgument;
  }
  const size_t tb = g.token_bytes();
  size_t dense_off = 0;
  for (uint32_t h = 0; h < g.num_kv_heads; ++h) {
    const uint32_t begin = ranges.begin[h];
    const uint32_t count = ranges.count[h];
    uint32_t slot = begin;
    const uint32_t end = begin + count;
    // Copy runs of slots that share a page: within a page a head's slots are contiguous.
    while (slot < end) {
      const uint32_t in_page = slot % g.page_tokens;
      const uint32_t run = std::min(end - slot, g.page_tokens - in_page);
      const size_t run_bytes = size_t{run} * tb;
      uint8_t* k_page = layer.k(h, slot);
      uint8_t* v_page = layer.v(h, slot);
      if (direction == CopyDirection::kDenseToPages) {
        std::memcpy(k_page, k_dense + dense_off, run_bytes);
        std::memcpy(v_page, v_dense + dense_off, run_bytes);
      } else {
        std::memcpy(k_dense + dense_off, k_page, run_bytes);
        std::memcpy(v_dense + dense_off, v_page, run_bytes);
      }
      dense_off += run_bytes;
      slot += run;
    }
  }
  return KernelStatus::kOk;
}

}  // namespace kvwarden::kernels
