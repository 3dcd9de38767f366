// CUDA version of CopyKvCpu (copy_kv_ref.cc): same arguments, same result.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/copy_kv.h"
#include "kernels/launch_status.cuh"

namespace kvwarden::kernels {
namespace {

// One grid row per head; threads stride over the head's slots in `Unit`-sized pieces.
template <typename Unit>
__global__ void CopyKvKernel(PagedLayerView layer, HeadSlotRanges ranges, bool to_pages,
                             uint8_t* k_dense, uint8_t* v_dense) {
  const uint32_t h = blockIdx.y;
  const size_t tb = layer.geometry.token_bytes();
  size_t dense_slot = 0;
  for (uint32_t i = 0; i < h; ++i) dense_slot += ranges.count[i];
  const uint32_t begin = ranges.begin[h];
  const size_t units_per_token = tb / sizeof(Unit);
  const size_t total = size_t{ranges.count[h]} * units_per_token;
  for (size_t u = blockIdx.x * size_t{blockDim.x} + threadIdx.x; u < total;
       u += size_t{gridDim.x} * blockDim.x) {
    const uint32_t t = static_cast<uint32_t>(u / units_per_token);
    const size_t within = (u % units_per_token) * sizeof(Unit);
    Unit* kp = reinterpret_cast<Unit*>(layer.k(h, begin + t) + within);
    Unit* vp = reinterpret_cast<Unit*>(layer.v(h, begin + t) + within);
    const size_t off = (dense_slot + t) * tb + within;
    Unit* kd = reinterpret_cast<Unit*>(k_dense + off);
    Unit* vd = reinterpret_cast<Unit*>(v_dense + off);
    if (to_pages) {
      *kp = *kd;
      *vp = *vd;
    } else {
      *kd = *kp;
      *vd = *vp;
    }
  }
}

}  // namespace

KernelStatus CopyKvCuda(const PagedLayerView& layer, HeadSlotRanges ranges,
                        CopyDirection direction, uint8_t* k_dense, uint8_t* v_dense,
                        void* stream, uint32_t max_count) {
  const PageGeometry& g = layer.geometry;
  if (g.page_tokens == 0 || g.token_bytes() == 0 || g.num_kv_heads == 0 ||
      ranges.begin == nullptr || ranges.count == nullptr || k_dense == nullptr ||
      v_dense == nullptr || layer.pages == nullptr) {
    return KernelStatus::kInvalidArgument;
  }
  const bool to_pages = direction == CopyDirection::kDenseToPages;
  auto s = static_cast<cudaStream_t>(stream);
  const bool aligned16 = g.token_bytes() % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(k_dense) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(v_dense) % 16 == 0;
  constexpr uint32_t kThreads = 256, kMaxBlocks = 64;
  uint32_t blocks = kMaxBlocks;
  if (max_count != 0) {
    const uint64_t units = uint64_t{max_count} * (g.token_bytes() / (aligned16 ? 16 : 1));
    blocks = static_cast<uint32_t>(std::min<uint64_t>(kMaxBlocks, (units + kThreads - 1) / kThreads));
  }
  const dim3 grid(blocks, g.num_kv_heads);
  const dim3 block(kThreads);
  ClearStaleCudaError();
  if (aligned16) {
    CopyKvKernel<uint4><<<grid, block, 0, s>>>(layer, ranges, to_pages, k_dense, v_dense);
  } else {
    CopyKvKernel<uint8_t><<<grid, block, 0, s>>>(layer, ranges, to_pages, k_dense, v_dense);
  }
  return LaunchStatus();
}

bool CudaDeviceAvailable() {
  int n = 0;
  // Without a driver this returns an error (e.g. insufficient driver): zero devices.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

}  // namespace kvwarden::kernels
