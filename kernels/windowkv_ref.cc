#include <algorithm>
#include <utility>
#include <vector>

#include "kernels/windowkv.h"

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
  // (each window's sum in token order, then over heads in head order), four windows at
  // a time so their dependency chains overlap instead of running one after another.
  const uint32_t w = p.omega, full = candidates / w;
  std::vector<double> over_heads(windows, 0.0);
  for (uint32_t h = 0; h < num_heads; ++h) {
    const float* row = t + static_cast<size_t>(h) * candidates;
    uint32_t k = 0;
    for (; k + 4 <= full; k += 4) {
      const float* r = row + static_cast<size_t>(k) * w;
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (uint32_t i = 0; i < w; ++i) {
        s0 += static_cast<double>(r[i]);
        s1 += static_cast<double>(r[w + i]);
        s2 += static_cast<double>(r[2 * w + i]);
        s3 += static_cast<double>(r[3 * w + i]);
      }
      over_heads[k] += s0 / w;
      over_heads[k + 1] += s1 / w;
      over_heads[k + 2] += s2 / w;
      over_heads[k + 3] += s3 / w;
    }
    for (; k < windows; ++k) {
      const uint32_t first = k * w, len = first + w <= candidates ? w : candidates - first;
      double s = 0;
      for (uint32_t i = 0; i < len; ++i) s += static_cast<double>(row[first + i]);
      over_heads[k] += s / len;
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
  // Lowest score first, the earlier window first among equals: (score, index) pairs
  // sorted directly, not indices through a comparator that loads the scores.
  std::vector<std::pair<double, uint32_t>> order(windows);
  for (uint32_t k = 0; k < windows; ++k) order[k] = {scores[k], k};
  std::sort(order.begin(), order.end());
  uint32_t kept = candidates;
  for (const auto& [score, k] : order) {
    if (kept <= b) break;
    const uint32_t first = k * p.omega;
    const uint32_t len = std::min(p.omega, candidates - first);
    std::fill(keep + first, keep + first + len, 0);
    kept -= len;
  }
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
