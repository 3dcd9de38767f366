// Definitions for builds without nvcc: the CUDA entry points exist and say so.
#include "kernels/copy_kv.h"

namespace kvwarden::kernels {

KernelStatus CopyKvCuda(const PagedLayerView&, HeadSlotRanges, CopyDirection, uint8_t*,
                        uint8_t*, void*) {
  return KernelStatus::kNotCompiled;
}

bool CudaDeviceAvailable() { return false; }

}  // namespace kvwarden::kernels
