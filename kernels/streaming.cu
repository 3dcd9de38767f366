// CUDA version of StreamingSelectCpu (streaming_ref.cc).
#include <cuda_runtime.h>

#include "kernels/streaming.h"
#include "kernels/launch_status.cuh"

namespace kvwarden::kernels {
namespace {

__global__ void StreamingSelectKernel(Segments slots, StreamingParams p, uint8_t* keep) {
  const uint32_t h = blockIdx.x;
  const uint32_t n = slots.size(h);
  for (uint32_t j = threadIdx.x; j < n; j += blockDim.x) {
    keep[slots.begin(h) + j] = StreamingKeeps(j, n, p) ? 1 : 0;
  }
}

}  // namespace

KernelStatus StreamingSelectCuda(Segments slots, StreamingParams p, uint8_t* keep, void* stream) {
  if (p.sinks >= p.budget || keep == nullptr || slots.offsets == nullptr) {
    return KernelStatus::kInvalidArgument;
  }
  if (slots.num_heads == 0) return KernelStatus::kOk;
  ClearStaleCudaError();
  StreamingSelectKernel<<<slots.num_heads, 256, 0, static_cast<cudaStream_t>(stream)>>>(slots, p, keep);
  return LaunchStatus();
}

}  // namespace kvwarden::kernels
