#pragma once

// Copies K/V between a layer's pages and a dense buffer packed head after head:
// head h contributes head_slot_count[h] consecutive slots starting at
// head_slot_begin[h], each `token_bytes` long, at byte offset
// token_bytes * (sum of the counts of heads before h).
// Used by WriteKV/ReadKV and by gather/scatter for transfers.
//
// One declaration, two definitions: copy_kv_ref.cc (CPU reference, used for cpu pools)
// and copy_kv.cu (CUDA, for cuda pools). Both validate the same way.

#include <cstdint>

#include "kernels/kernel_status.h"
#include "kernels/page_view.h"

namespace kvwarden::kernels {

struct HeadSlotRanges {
  const uint32_t* begin = nullptr;  // [num_kv_heads]
  const uint32_t* count = nullptr;  // [num_kv_heads]
};

enum class CopyDirection { kDenseToPages, kPagesToDense };

// Every head's slot range lies inside the layer's num_pages pages (host arrays). The one
// range check of both versions: the CPU one runs it, callers of the device one (which
// cannot refuse) run it on the host first.
bool HeadRangesFit(const PageGeometry& geometry, uint32_t num_pages, HeadSlotRanges ranges);

// CPU reference. All pointers are host pointers.
KernelStatus CopyKvCpu(const PagedLayerView& layer, HeadSlotRanges ranges,
                       CopyDirection direction, uint8_t* k_dense, uint8_t* v_dense);

// CUDA version: `layer.pages` is a device array of device pointers, `ranges` arrays and
// the dense buffers are device memory; `stream` is a cudaStream_t (nullptr = default).
// Returns kNotCompiled in builds without CUDA. Asynchronous on `stream`. `max_count`,
// the largest of `ranges.count` where the caller knows it on the host (0 = unknown),
// sizes the grid: a one-token decode write then launches one block per head, not 64.
KernelStatus CopyKvCuda(const PagedLayerView& layer, HeadSlotRanges ranges, CopyDirection direction,
                        uint8_t* k_dense, uint8_t* v_dense, void* stream, uint32_t max_count = 0);

// True when this build has CUDA kernels and a device is visible.
bool CudaDeviceAvailable();

}  // namespace kvwarden::kernels
