// CUDA versions of the H2O kernels (h2o_ref.cc), bit-identical to the CPU reference.
#include <cuda_runtime.h>

#include "kernels/h2o.h"
#include "kernels/launch_status.cuh"

namespace kvwarden::kernels {
namespace {

// Block per head, thread per slot: each slot's steps are added in step order, as the CPU does.
__global__ void H2oAccumulateKernel(H2oScores scores, uint32_t heads, uint32_t num_steps,
                                    const uint32_t* row_offsets, const float* attention) {
  const uint32_t h = blockIdx.x;
  float* row = scores.row(h);
  for (uint32_t j = threadIdx.x; j < scores.stride; j += blockDim.x) {
    float sum = row[j];
    bool touched = false;
    for (uint32_t s = 0; s < num_steps; ++s) {
      const uint32_t begin = row_offsets[s * heads + h], end = row_offsets[s * heads + h + 1];
      if (j < end - begin) {
        sum += attention[begin + j];
        touched = true;
      }
    }
    if (touched) row[j] = sum;
  }
}

// Block per head: a candidate is evicted when fewer than `evict` candidates go before it
// (H2oEvictsBefore is a strict total order, so exactly `evict` are). O(n^2 / threads) per
// head; n is at most budget + drop.
__global__ void H2oSelectKernel(Segments slots, H2oScores scores, H2oParams p, uint8_t* keep) {
  const uint32_t h = blockIdx.x;
  const uint32_t n = slots.size(h);
  uint8_t* k = keep + slots.begin(h);
  const uint32_t evict = H2oEvictCount(n, p);
  const float* row = scores.row(h);
  const uint32_t first = p.sinks, last = evict == 0 ? 0 : n - p.recent;  // candidates [first, last)
  for (uint32_t j = threadIdx.x; j < n; j += blockDim.x) {
    if (evict == 0 || j < first || j >= last) {
      k[j] = 1;
      continue;
    }
    uint32_t before = 0;
    for (uint32_t c = first; c < last && before < evict; ++c) {
      if (H2oEvictsBefore(row[c], c, row[j], j)) ++before;
    }
    k[j] = before < evict ? 0 : 1;
  }
}

__global__ void H2oGatherKernel(H2oScores scores, uint32_t head, const uint32_t* kept, uint32_t kept_count,
                                float* scratch) {
  const float* row = scores.row(head);
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < kept_count; i += gridDim.x * blockDim.x) {
    scratch[i] = row[kept[i]];
  }
}

__global__ void H2oScatterKernel(H2oScores scores, uint32_t head, uint32_t kept_count, uint32_t old_live,
                                 const float* scratch) {
  float* row = scores.row(head);
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < old_live; i += gridDim.x * blockDim.x) {
    row[i] = i < kept_count ? scratch[i] : 0.0f;
  }
}

}  // namespace

KernelStatus H2oAccumulateCuda(H2oScores scores, uint32_t heads, uint32_t num_steps, const uint32_t* row_offsets,
                               const float* attention, void* stream) {
  if (scores.rows == nullptr || row_offsets == nullptr) return KernelStatus::kInvalidArgument;
  if (heads == 0 || num_steps == 0 || scores.stride == 0) return KernelStatus::kOk;
  ClearStaleCudaError();
  H2oAccumulateKernel<<<heads, 256, 0, static_cast<cudaStream_t>(stream)>>>(scores, heads, num_steps, row_offsets,
                                                                             attention);
  return LaunchStatus();
}

KernelStatus H2oSelectCuda(Segments slots, H2oScores scores, H2oParams p, uint8_t* keep, void* stream) {
  if (!H2oProtectedFit(p) || keep == nullptr || slots.offsets == nullptr) return KernelStatus::kInvalidArgument;
  if (slots.num_heads == 0) return KernelStatus::kOk;
  ClearStaleCudaError();
  H2oSelectKernel<<<slots.num_heads, 256, 0, static_cast<cudaStream_t>(stream)>>>(slots, scores, p, keep);
  return LaunchStatus();
}

KernelStatus H2oCompactHeadCuda(H2oScores scores, uint32_t head, const uint32_t* kept, uint32_t kept_count,
                                uint32_t old_live, float* scratch, void* stream) {
  if (scores.rows == nullptr || kept_count > old_live || old_live > scores.stride) {
    return KernelStatus::kInvalidArgument;
  }
  if (old_live == 0) return KernelStatus::kOk;
  ClearStaleCudaError();
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const uint32_t blocks = (old_live + 255) / 256;
  if (kept_count > 0) H2oGatherKernel<<<(kept_count + 255) / 256, 256, 0, s>>>(scores, head, kept, kept_count, scratch);
  H2oScatterKernel<<<blocks, 256, 0, s>>>(scores, head, kept_count, old_live, scratch);
  return LaunchStatus();
}

}  // namespace kvwarden::kernels
