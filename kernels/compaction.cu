// CUDA version of CompactLayerCpu (compaction_ref.cc). Parallel in-place moves would race
// (slot i may be read by one thread while another writes it), so kept slots are gathered
// into scratch, then written back to the front of each head.
#include <cuda_runtime.h>

#include "kernels/compaction.h"

namespace kvwarden::kernels {
namespace {

template <bool kGather>
__global__ void MoveKernel(PagedLayerView layer, const uint32_t* kept_offsets,
                           const uint32_t* kept_slots, uint8_t* scratch, uint32_t total_kept) {
  const uint32_t h = blockIdx.y;
  const size_t tb = layer.geometry.token_bytes();
  const uint32_t begin = kept_offsets[h], count = kept_offsets[h + 1] - begin;
  uint8_t* k_scratch = scratch;
  uint8_t* v_scratch = scratch + size_t{total_kept} * tb;
  const size_t total = size_t{count} * tb;
  for (size_t u = blockIdx.x * size_t{blockDim.x} + threadIdx.x; u < total;
       u += size_t{gridDim.x} * blockDim.x) {
    const uint32_t i = static_cast<uint32_t>(u / tb);
    const size_t byte = u % tb;
    const size_t s = (size_t{begin} + i) * tb + byte;
    if (kGather) {
      k_scratch[s] = layer.k(h, kept_slots[begin + i])[byte];
      v_scratch[s] = layer.v(h, kept_slots[begin + i])[byte];
    } else {
      layer.k(h, i)[byte] = k_scratch[s];
      layer.v(h, i)[byte] = v_scratch[s];
    }
  }
}

}  // namespace

KernelStatus CompactLayerCuda(const PagedLayerView& layer, const uint32_t* kept_offsets,
                              const uint32_t* kept_slots, uint32_t total_kept, uint8_t* scratch,
                              void* stream) {
  if (kept_offsets == nullptr || layer.geometry.page_tokens == 0 || layer.pages == nullptr ||
      (total_kept > 0 && (kept_slots == nullptr || scratch == nullptr))) {
    return KernelStatus::kInvalidArgument;
  }
  if (total_kept == 0 || layer.geometry.num_kv_heads == 0) return KernelStatus::kOk;
  const dim3 grid(32, layer.geometry.num_kv_heads);
  auto s = static_cast<cudaStream_t>(stream);
  MoveKernel<true><<<grid, 256, 0, s>>>(layer, kept_offsets, kept_slots, scratch, total_kept);
  MoveKernel<false><<<grid, 256, 0, s>>>(layer, kept_offsets, kept_slots, scratch, total_kept);
  return cudaGetLastError() == cudaSuccess ? KernelStatus::kOk : KernelStatus::kDeviceError;
}

}  // namespace kvwarden::kernels
