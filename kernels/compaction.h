#pragma once

// Page compaction: after a retention decision, move each head's kept slots to the front
// of its slot range (kept slot i lands in slot i), in position order, so whole pages at
// the end of the layer's page table become free.

#include <cstdint>

#include "kernels/kernel_status.h"
#include "kernels/page_view.h"

namespace kvwarden::kernels {

// kept_slots[kept_offsets[h] .. kept_offsets[h+1]) ascending, for every head.
// In place: slot i is written only after every slot that reads from it.
KernelStatus CompactLayerCpu(const PagedLayerView& layer, const uint32_t* kept_offsets,
                             const uint32_t* kept_slots);
// Device version: gathers kept slots into `scratch` (>= 2 * kept total * token_bytes
// bytes of device memory), then writes them back to the front. Asynchronous on stream.
KernelStatus CompactLayerCuda(const PagedLayerView& layer, const uint32_t* kept_offsets,
                              const uint32_t* kept_slots, uint32_t total_kept, uint8_t* scratch,
                              void* stream);

}  // namespace kvwarden::kernels
