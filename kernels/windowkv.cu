// CUDA versions of windowkv_ref.cc: the same WindowKvScore per window (one thread each),
// and the same drop order computed by ranking windows instead of sorting them.
#include <cuda_runtime.h>

#include "kernels/windowkv.h"
#include "kernels/launch_status.cuh"

namespace kvwarden::kernels {
namespace {

bool Valid(uint32_t n, const WindowKvParams& p) {
  return p.omega > 0 && p.omega <= kWindowKvMaxOmega && p.top_p > 0 && p.top_p <= p.omega &&
         p.budget > p.alpha && n > p.alpha;
}

__global__ void ScoreKernel(const float* t, uint32_t num_heads, uint32_t candidates,
                            uint32_t windows, uint32_t omega, uint32_t top_p, double* scores) {
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k < windows) scores[k] = WindowKvScore(t, num_heads, candidates, k, omega, top_p);
}

// Window k drops iff, after dropping every window ranked before it (lower score, or equal
// and earlier), the kept candidates still exceed b.
__global__ void SelectKernel(const double* scores, uint32_t n, uint32_t candidates,
                             uint32_t windows, uint32_t omega, uint32_t b, uint8_t* keep) {
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= windows) return;
  uint64_t dropped_before = 0;
  for (uint32_t o = 0; o < windows; ++o) {
    if (scores[o] < scores[k] || (scores[o] == scores[k] && o < k)) {
      const uint32_t first = o * omega;
      dropped_before += first + omega <= candidates ? omega : candidates - first;
    }
  }
  const bool drop = candidates > b && candidates - dropped_before > b;
  const uint32_t first = k * omega;
  const uint32_t len = first + omega <= candidates ? omega : candidates - first;
  for (uint32_t j = first; j < first + len; ++j) keep[j] = drop ? 0 : 1;
  if (k == 0) {
    for (uint32_t j = candidates; j < n; ++j) keep[j] = 1;
  }
}

}  // namespace

KernelStatus WindowKvScoreCuda(const float* t, uint32_t num_heads, uint32_t n, WindowKvParams p,
                               double* scores, void* stream) {
  if (!Valid(n, p) || num_heads == 0 || t == nullptr || scores == nullptr) {
    return KernelStatus::kInvalidArgument;
  }
  const uint32_t candidates = n - p.alpha;
  const uint32_t windows = WindowKvNumWindows(candidates, p.omega);
  ClearStaleCudaError();
  ScoreKernel<<<(windows + 127) / 128, 128, 0, static_cast<cudaStream_t>(stream)>>>(
      t, num_heads, candidates, windows, p.omega, p.top_p, scores);
  return LaunchStatus();
}

KernelStatus WindowKvSelectCuda(const double* scores, uint32_t n, WindowKvParams p, uint8_t* keep,
                                void* stream) {
  if (!Valid(n, p) || scores == nullptr || keep == nullptr) return KernelStatus::kInvalidArgument;
  const uint32_t candidates = n - p.alpha;
  const uint32_t windows = WindowKvNumWindows(candidates, p.omega);
  ClearStaleCudaError();
  SelectKernel<<<(windows + 127) / 128, 128, 0, static_cast<cudaStream_t>(stream)>>>(
      scores, n, candidates, windows, p.omega, p.budget - p.alpha, keep);
  return LaunchStatus();
}

}  // namespace kvwarden::kernels
