#pragma once

// StreamingLLM baseline: with n > budget live slots, keep the `sinks` oldest and the
// `budget - sinks` newest. Needs no statistics.

#include <cstdint>

#include "kernels/kernel_status.h"
#include "kernels/segments.h"

namespace kvwarden::kernels {

struct StreamingParams {
  uint32_t budget = 0;
  uint32_t sinks = 0;  // < budget (the daemon's default: proto/kvwarden/v1/policy.proto)
};

// keep[i] = 1 for kept slots, 0 for evicted, over slots.total() entries.
KernelStatus StreamingSelectCpu(Segments slots, StreamingParams p, uint8_t* keep);
// Device pointers; asynchronous on `stream` (a cudaStream_t).
KernelStatus StreamingSelectCuda(Segments slots, StreamingParams p, uint8_t* keep, void* stream);

// Shared by both: does slot j of a head with n live slots survive?
KVW_HOST_DEVICE inline bool StreamingKeeps(uint32_t j, uint32_t n, StreamingParams p) {
  return n <= p.budget || j < p.sinks || j >= n - (p.budget - p.sinks);
}

}  // namespace kvwarden::kernels
