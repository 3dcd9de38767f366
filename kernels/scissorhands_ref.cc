#include <algorithm>
#include <numeric>
#include <vector>

#include "kernels/scissorhands.h"

namespace kvwarden::kernels {

KernelStatus ScissorhandsRecordStepCpu(Segments slots, uint32_t window, uint64_t step,
                                       const uint32_t* attended, const uint32_t* listed_offsets,
                                       const uint32_t* listed_ids, uint32_t* history) {
  if (window == 0 || slots.offsets == nullptr || attended == nullptr || history == nullptr) {
    return KernelStatus::kInvalidArgument;
  }
  const uint32_t words = ScissorhandsWords(window);
  const uint32_t bit = static_cast<uint32_t>(step % window);
  const uint32_t word = bit / 32, mask = 1u << (bit % 32);
  for (uint32_t h = 0; h < slots.num_heads; ++h) {
    const uint32_t base = slots.begin(h), n = slots.size(h);
    if (attended[h] > n) return KernelStatus::kInvalidArgument;
    // Low unless listed; slots newer than the step have no say in it.
    for (uint32_t j = 0; j < n; ++j) {
      uint32_t& w = history[size_t{base + j} * words + word];
      w = j < attended[h] ? (w | mask) : (w & ~mask);
    }
    for (uint32_t i = listed_offsets[h]; i < listed_offsets[h + 1]; ++i) {
      if (listed_ids[i] >= attended[h]) return KernelStatus::kInvalidArgument;
      history[size_t{base + listed_ids[i]} * words + word] &= ~mask;
    }
  }
  return KernelStatus::kOk;
}

KernelStatus ScissorhandsSelectCpu(Segments slots, const uint32_t* history,
                                   ScissorhandsParams p, uint8_t* keep, uint32_t* low_counts) {
  if (p.window == 0 || p.recent + p.sinks >= p.budget || keep == nullptr || history == nullptr) {
    return KernelStatus::kInvalidArgument;
  }
  const uint32_t words = ScissorhandsWords(p.window);
  std::vector<uint32_t> order;
  for (uint32_t h = 0; h < slots.num_heads; ++h) {
    const uint32_t base = slots.begin(h), n = slots.size(h);
    std::vector<uint32_t> low(n, 0);
    for (uint32_t j = 0; j < n; ++j) {
      for (uint32_t w = 0; w < words; ++w) low[j] += PopCount32(history[size_t{base + j} * words + w]);
      if (low_counts != nullptr) low_counts[base + j] = low[j];
      keep[base + j] = 1;
    }
    const uint32_t evict = ScissorhandsEvictCount(n, p);
    if (evict == 0) continue;
    // Candidates [sinks, n - recent), largest I first, older first among equals.
    order.resize(n - p.recent - p.sinks);
    std::iota(order.begin(), order.end(), p.sinks);
    std::stable_sort(order.begin(), order.end(),
                     [&](uint32_t a, uint32_t b) { return low[a] > low[b]; });
    for (uint32_t i = 0; i < evict; ++i) keep[base + order[i]] = 0;
  }
  return KernelStatus::kOk;
}

}  // namespace kvwarden::kernels
