#pragma once

// The vectorised part of WindowKvScoreCpu: x86-64 with AVX2, chosen at run time.

#include <cstdint>

namespace kvwarden::kernels {

// over_heads[k] += WindowKvSum(row + k * omega, omega) / omega for the windows
// k < full_windows, bit for bit. Returns the number of windows done (a multiple of
// four; 0 without AVX2 or when omega is not a multiple of four): the caller does the rest.
uint32_t WindowKvAddWindowMeansAvx2(const float* row, uint32_t full_windows, uint32_t omega,
                                    double* over_heads);

}  // namespace kvwarden::kernels
