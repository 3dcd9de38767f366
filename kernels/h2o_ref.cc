// CPU reference of the H2O kernels (h2o.h); h2o.cu must agree bit for bit.
#include <algorithm>
#include <numeric>
#include <vector>

#include "kernels/h2o.h"

namespace kvwarden::kernels {

KernelStatus H2oAccumulateCpu(H2oScores scores, uint32_t heads, uint32_t num_steps, const uint32_t* row_offsets,
                              const float* attention) {
  if (scores.rows == nullptr || row_offsets == nullptr) return KernelStatus::kInvalidArgument;
  for (uint32_t s = 0; s < num_steps; ++s) {
    for (uint32_t h = 0; h < heads; ++h) {
      const uint32_t begin = row_offsets[s * heads + h], end = row_offsets[s * heads + h + 1];
      if (end < begin || end - begin > scores.stride) return KernelStatus::kInvalidArgument;
      float* row = scores.row(h);
      for (uint32_t j = 0; j < end - begin; ++j) row[j] += attention[begin + j];
    }
  }
  return KernelStatus::kOk;
}

KernelStatus H2oSelectCpu(Segments slots, H2oScores scores, H2oParams p, uint8_t* keep) {
  if (!H2oProtectedFit(p) || keep == nullptr || slots.offsets == nullptr) return KernelStatus::kInvalidArgument;
  std::vector<uint32_t> candidates;
  for (uint32_t h = 0; h < slots.num_heads; ++h) {
    const uint32_t n = slots.size(h);
    uint8_t* k = keep + slots.begin(h);
    std::fill(k, k + n, 1);
    const uint32_t evict = H2oEvictCount(n, p);
    if (evict == 0) continue;
    const float* row = scores.row(h);
    candidates.resize(n - p.recent - p.sinks);
    std::iota(candidates.begin(), candidates.end(), p.sinks);
    std::nth_element(candidates.begin(), candidates.begin() + (evict - 1), candidates.end(),
                     [&](uint32_t a, uint32_t b) { return H2oEvictsBefore(row[a], a, row[b], b); });
    for (uint32_t i = 0; i < evict; ++i) k[candidates[i]] = 0;
  }
  return KernelStatus::kOk;
}

KernelStatus H2oCompactHeadCpu(H2oScores scores, uint32_t head, const uint32_t* kept, uint32_t kept_count,
                               uint32_t old_live) {
  if (scores.rows == nullptr || kept_count > old_live || old_live > scores.stride) {
    return KernelStatus::kInvalidArgument;
  }
  float* row = scores.row(head);
  // kept is ascending, so kept[i] >= i: a forward pass never reads what it overwrote.
  for (uint32_t i = 0; i < kept_count; ++i) {
    if (kept[i] >= old_live) return KernelStatus::kInvalidArgument;
    row[i] = row[kept[i]];
  }
  std::fill(row + kept_count, row + old_live, 0.0f);
  return KernelStatus::kOk;
}

}  // namespace kvwarden::kernels
