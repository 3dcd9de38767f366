#pragma once

#include "cache_service/core/scissorhands_rings.h"

#if defined(KVW_HAVE_CUDA)

#include <memory>

#include "cache_service/core/cuda_queue.h"

namespace kvwarden {

// Device memory on `queue`'s device, CUDA kernels on its stream.
std::unique_ptr<ScissorhandsRings> NewCudaScissorhandsRings(std::shared_ptr<CudaQueue> queue, size_t heads,
                                                            uint32_t window);

}  // namespace kvwarden

#endif  // KVW_HAVE_CUDA
