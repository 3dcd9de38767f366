#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "cache_service/core/memory/pool_device.h"
#include "kernels/windowkv.h"

namespace kvwarden {

// WindowKV for one group of n tokens on `device` (CPU kernels for host memory, CUDA
// kernels on the device's queue otherwise): scores the n - alpha candidates from `sums`
// ([head][candidate], host memory) and returns the keep mask over all n tokens.
absl::Status WindowKvKeep(PoolDevice& device, const std::vector<float>& sums, uint32_t heads, uint32_t n,
                          const kernels::WindowKvParams& p, std::vector<uint8_t>* keep);

}  // namespace kvwarden
