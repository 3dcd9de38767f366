#pragma once

// WindowKV (Zuo et al., 2025, "WindowKV: Task-Adaptive Group-Wise KV Cache Window
// Selection for Efficient LLM Inference"): prefill-time selection of whole windows of
// consecutive tokens, scored by the observation window's attention. The algorithm and its
// worked example: README, "Retention policies".
//
// Scores use one shared per-window function (below) in both the CPU reference and the
// CUDA kernel, with double accumulation in a fixed order, so the two agree bit for bit.
// The order (WindowKvSum) is four interleaved lanes, the order a 4-wide SIMD loop adds
// in: the CPU scorer vectorises it without changing a bit.

#include <cstdint>

#include "kernels/host_device.h"
#include "kernels/kernel_status.h"

namespace kvwarden::kernels {

inline constexpr uint32_t kWindowKvMaxOmega = 256;

struct WindowKvParams {
  uint32_t alpha = 8;   // observation window: the last alpha tokens, always kept
  uint32_t omega = 8;   // window size in tokens, <= kWindowKvMaxOmega
  uint32_t top_p = 8;   // tokens of a window that score it (<= omega)
  uint32_t budget = 0;  // layer budget including the alpha observation tokens (> alpha)
};

KVW_HOST_DEVICE inline uint32_t WindowKvNumWindows(uint32_t candidates, uint32_t omega) {
  return (candidates + omega - 1) / omega;
}

// Sum of x[0..len) in double: lane l adds x[i] for i = l (mod 4) in token order, then
// (lane0 + lane1) + (lane2 + lane3).
KVW_HOST_DEVICE inline double WindowKvSum(const float* x, uint32_t len) {
  double lane[4] = {0, 0, 0, 0};
  for (uint32_t i = 0; i < len; ++i) lane[i & 3] += static_cast<double>(x[i]);
  return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

// Score of window k: mean over heads of the mean of its top_p largest t[h][j]
// (min(top_p, length) for a short last window). t is [head][candidate].
KVW_HOST_DEVICE inline double WindowKvScore(const float* t, uint32_t num_heads, uint32_t candidates,
                                            uint32_t k, uint32_t omega, uint32_t top_p) {
  const uint32_t first = k * omega;
  const uint32_t len = first + omega <= candidates ? omega : candidates - first;
  const uint32_t p = top_p < len ? top_p : len;
  float v[kWindowKvMaxOmega];
  double over_heads = 0;
  for (uint32_t h = 0; h < num_heads; ++h) {
    const float* row = t + static_cast<size_t>(h) * candidates + first;
    if (p == len) {  // every token scores the window: no need to rank them
      over_heads += WindowKvSum(row, len) / p;
      continue;
    }
    // Insertion sort, descending: windows are short and this order is the same everywhere.
    for (uint32_t i = 0; i < len; ++i) {
      float x = row[i];
      uint32_t at = i;
      while (at > 0 && v[at - 1] < x) {
        v[at] = v[at - 1];
        --at;
      }
      v[at] = x;
    }
    over_heads += WindowKvSum(v, p) / p;
  }
  return over_heads / num_heads;
}

// scores[k] for every window of the n - alpha candidates.
KernelStatus WindowKvScoreCpu(const float* t, uint32_t num_heads, uint32_t n, WindowKvParams p,
                              double* scores);
KernelStatus WindowKvScoreCuda(const float* t, uint32_t num_heads, uint32_t n, WindowKvParams p,
                               double* scores, void* stream);

// keep[j] over all n tokens: kept windows plus the observation window. Drops the
// lowest-scoring windows (ties: earlier first) until the kept candidates fit in
// budget - alpha; keeps everything when they already fit.
KernelStatus WindowKvSelectCpu(const double* scores, uint32_t n, WindowKvParams p, uint8_t* keep);
KernelStatus WindowKvSelectCuda(const double* scores, uint32_t n, WindowKvParams p, uint8_t* keep,
                                void* stream);

// Per-group budgets: last = floor(B_mean * gamma / lambda), first = 2 * B_mean - last,
// b_g = first - floor(g * (first - last) / (G - 1)). One group gets B_mean. In 64-bit
// signed arithmetic: the caller checks that every budget is in range (first can be <= 0).
void WindowKvGroupBudgets(uint32_t mean_budget, uint32_t gamma, uint32_t lambda,
                          uint32_t num_groups, int64_t* budgets);

}  // namespace kvwarden::kernels
