#include "kernels/streaming.h"

namespace kvwarden::kernels {

KernelStatus StreamingSelectCpu(Segments slots, StreamingParams p, uint8_t* keep) {
  if (p.sinks >= p.budget || keep == nullptr || slots.offsets == nullptr) {
    return KernelStatus::kInvalidArgument;
  }
  for (uint32_t h = 0; h < slots.num_heads; ++h) {
    const uint32_t n = slots.size(h);
    for (uint32_t j = 0; j < n; ++j) keep[slots.begin(h) + j] = StreamingKeeps(j, n, p) ? 1 : 0;
  }
  return KernelStatus::kOk;
}

}  // namespace kvwarden::kernels
