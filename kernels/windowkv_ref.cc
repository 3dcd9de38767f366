#include <algorithm>
#include <utility>
#include <vector>

#include "kernels/windowkv.h"
#include "kernels/windowkv_score_x86.h"

namespace kvwarden::kernels {
namespace {

bool Valid(uint32_t n, const WindowKvParams& p) {
  return p.omega > 0 && p.omega <= kWindowKvMaxOmega && p.top_p > 0 && p.top_p <= p.omega &&
         p.budget > p.alpha && n > p.alpha;
}

}  // namespace

KernelStatus WindowKvScoreCpu(const float* t, uint32_t num_heads, uint32_t n, WindowKvParams p,
                              double* scores) {
  if (!Valid(n, p) || num_heads == 0 || t == nullptr || scores == nullptr) {
    return KernelStatus::kInvalidArgument;
  }
  const uint32_t candidates = n - p.alpha;
  const uint32_t windows = WindowKvNumWindows(candidates, p.omega);
  if (p.top_p != p.omega) {
    for (uint32_t k = 0; k < windows; ++k) scores[k] = WindowKvScore(t, num_heads, candidates, k, p.omega, p.top_p);
    return KernelStatus::kOk;
  }
  // Every token scores its window (top_p = omega): WindowKvScore's arithmetic exactly
  // (each window's WindowKvSum, then over heads in head order), head row by head row so
  // the reads stream, four windows per AVX2 step where the CPU has it.
  const uint32_t w = p.omega, full = candidates / w;
  std::vector<double> over_heads(windows, 0.0);
  for (uint32_t h = 0; h < num_heads; ++h) {
    const float* row = t + static_cast<size_t>(h) * candidates;
    uint32_t k = WindowKvAddWindowMeansAvx2(row, full, w, over_heads.data());
    for (; k < windows; ++k) {
      const uint32_t first = k * w, len = first + w <= candidates ? w : candidates - first;
      over_heads[k] += WindowKvSum(row + first, len) / len;
    }
  }
  for (uint32_t k = 0; k < windows; ++k) scores[k] = over_heads[k] / num_heads;
  return KernelStatus::kOk;
}

KernelStatus WindowKvSelectCpu(const double* scores, uint32_t n, WindowKvParams p, uint8_t* keep) {
  if (!Valid(n, p) || scores == nullptr || keep == nullptr) return KernelStatus::kInvalidArgument;
  const uint32_t candidates = n - p.alpha;
  std::fill(keep, keep + n, 1);
  const uint32_t b = p.budget - p.alpha;
  if (candidates <= b) return KernelStatus::kOk;
  const uint32_t windows = WindowKvNumWindows(candidates, p.omega);
  // Drop the d lowest windows in (score, index) order, the earlier first among equal
  // scores, where d is the fewest that free candidates - b tokens. Every window but the
  // last has omega tokens, so d = ceil(excess / omega) unless the short last window is
  // among them and leaves the freed count short: then one more. A selection (linear),
  // not a sort: the same windows as dropping in sorted order until the rest fit.
  const uint32_t excess = candidates - b, last = windows - 1;
  const uint32_t last_len = candidates - last * p.omega;
  uint32_t d = (excess + p.omega - 1) / p.omega;
  std::vector<std::pair<double, uint32_t>> order(windows);
  for (uint32_t k = 0; k < windows; ++k) order[k] = {scores[k], k};
  std::nth_element(order.begin(), order.begin() + (d - 1), order.end());
  if (last_len < p.omega && uint64_t{d - 1} * p.omega + last_len < excess &&
      std::any_of(order.begin(), order.begin() + d, [&](const auto& o) { return o.second == last; })) {
    std::iter_swap(order.begin() + d, std::min_element(order.begin() + d, order.end()));
    ++d;
  }
  // Per-window flags, then keep[] written window by window in one forward pass: filling
  // each dropped window where the selection left it scatters byte stores and cost more
  // than the selection.
  std::vector<uint8_t> window_kept(windows, 1);
  for (uint32_t i = 0; i < d; ++i) window_kept[order[i].second] = 0;
  for (uint32_t k = 0; k < last; ++k) {
    uint8_t* dst = keep + static_cast<size_t>(k) * p.omega;
    for (uint32_t j = 0; j < p.omega; ++j) dst[j] = window_kept[k];
  }
  std::fill(keep + last * p.omega, keep + candidates, window_kept[last]);
  return KernelStatus::kOk;
}

void WindowKvGroupBudgets(uint32_t mean_budget, uint32_t gamma, uint32_t lambda,
                          uint32_t num_groups, int64_t* budgets) {
  if (num_groups == 1) {
    budgets[0] = mean_budget;
    return;
  }
  // Signed: with gamma > lambda the budgets grow with depth (first < last), and the
  // step g * (first - last) / (G - 1) is negative, rounded towards minus infinity.
  const int64_t last = int64_t{mean_budget} * gamma / lambda;
  const int64_t first = 2 * int64_t{mean_budget} - last;
  const int64_t span = first - last, groups = int64_t{num_groups} - 1;
  for (uint32_t g = 0; g < num_groups; ++g) {
    const int64_t step = g * span;
    const int64_t floor_div = step >= 0 ? step / groups : -((-step + groups - 1) / groups);
    budgets[g] = first - floor_div;
  }
}

}  // namespace kvwarden::kernels
