#pragma once

// The one view of a paged KV layout, shared by CPU references and CUDA kernels so the
// two cannot disagree on indexing. Plain data: copyable to a device by value.
//
// A page holds K and V of one layer for all KV heads and `page_tokens` slots:
//   [K: head 0 slots 0..page_tokens-1 | head 1 ... ][V: same]
// each slot `head_dim` elements of `elem_bytes`. Slot s of a head lives in page
// s / page_tokens of the layer's page table, at in-page slot s % page_tokens.

#include <cstddef>
#include <cstdint>

#include "kernels/host_device.h"

namespace kvwarden::kernels {

struct PageGeometry {
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t page_tokens = 0;
  uint32_t elem_bytes = 0;

  // Bytes of one token's K (or V) in one head.
  KVW_HOST_DEVICE size_t token_bytes() const { return size_t{head_dim} * elem_bytes; }
  KVW_HOST_DEVICE size_t head_stride() const { return page_tokens * token_bytes(); }
  // Bytes of the K half (or the V half) of a page.
  KVW_HOST_DEVICE size_t half_bytes() const { return num_kv_heads * head_stride(); }
  KVW_HOST_DEVICE size_t page_bytes() const { return 2 * half_bytes(); }
  KVW_HOST_DEVICE size_t k_offset(uint32_t head, uint32_t in_page_slot) const {
    return head * head_stride() + in_page_slot * token_bytes();
  }
  KVW_HOST_DEVICE size_t v_offset(uint32_t head, uint32_t in_page_slot) const {
    return half_bytes() + k_offset(head, in_page_slot);
  }
};

// One layer of one sequence: its page table as page base pointers (host pointers for a
// CPU pool, device pointers in device memory for a GPU pool).
struct PagedLayerView {
  PageGeometry geometry;
  uint8_t* const* pages = nullptr;
  uint32_t num_pages = 0;

  KVW_HOST_DEVICE uint32_t capacity_slots() const { return num_pages * geometry.page_tokens; }
  KVW_HOST_DEVICE uint8_t* k(uint32_t head, uint32_t slot) const {
    return pages[slot / geometry.page_tokens] +
           geometry.k_offset(head, slot % geometry.page_tokens);
  }
  KVW_HOST_DEVICE uint8_t* v(uint32_t head, uint32_t slot) const {
    return pages[slot / geometry.page_tokens] +
           geometry.v_offset(head, slot % geometry.page_tokens);
  }
};

}  // namespace kvwarden::kernels
