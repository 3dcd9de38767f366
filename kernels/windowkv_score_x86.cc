#include "kernels/windowkv_score_x86.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvwarden::kernels {

#if defined(__x86_64__)
namespace {

// WindowKvSum of the four windows at r, r + w, r + 2w, r + 3w: one vector accumulator
// per window holds its four lanes (lane l = token i with i = l mod 4), then hadd pairs
// lanes 0+1 and 2+3 and the last add joins them: the same additions as the scalar sum.
template <uint32_t kW>
__attribute__((target("avx2"), always_inline)) inline __m256d FourWindowSums(const float* r,
                                                                              uint32_t runtime_w) {
  const uint32_t w = kW != 0 ? kW : runtime_w;
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
  for (uint32_t i = 0; i < w; i += 4) {
    a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm_loadu_ps(r + i)));
    a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm_loadu_ps(r + w + i)));
    a2 = _mm256_add_pd(a2, _mm256_cvtps_pd(_mm_loadu_ps(r + 2 * w + i)));
    a3 = _mm256_add_pd(a3, _mm256_cvtps_pd(_mm_loadu_ps(r + 3 * w + i)));
  }
  // t0 = (a0.l0+a0.l1, a1.l0+a1.l1, a0.l2+a0.l3, a1.l2+a1.l3), t1 likewise for a2, a3.
  const __m256d t0 = _mm256_hadd_pd(a0, a1), t1 = _mm256_hadd_pd(a2, a3);
  return _mm256_add_pd(_mm256_permute2f128_pd(t0, t1, 0x20), _mm256_permute2f128_pd(t0, t1, 0x31));
}

template <uint32_t kW>
__attribute__((target("avx2"))) uint32_t AddWindowMeans(const float* row, uint32_t full,
                                                        uint32_t runtime_w, double* over_heads) {
  const uint32_t w = kW != 0 ? kW : runtime_w;
  const __m256d len = _mm256_set1_pd(static_cast<double>(w));
  uint32_t k = 0;
  for (; k + 4 <= full; k += 4) {
    const __m256d sums = FourWindowSums<kW>(row + static_cast<size_t>(k) * w, w);
    // sum / len, not sum * (1 / len): the scalar path divides.
    _mm256_storeu_pd(over_heads + k, _mm256_add_pd(_mm256_loadu_pd(over_heads + k), _mm256_div_pd(sums, len)));
  }
  return k;
}

}  // namespace

uint32_t WindowKvAddWindowMeansAvx2(const float* row, uint32_t full_windows, uint32_t omega,
                                    double* over_heads) {
  static const bool have_avx2 = __builtin_cpu_supports("avx2");
  if (!have_avx2 || omega % 4 != 0) return 0;
  // WindowKV's usual window size gets a fixed-trip inner loop.
  return omega == 8 ? AddWindowMeans<8>(row, full_windows, omega, over_heads)
                    : AddWindowMeans<0>(row, full_windows, omega, over_heads);
}

#else

uint32_t WindowKvAddWindowMeansAvx2(const float*, uint32_t, uint32_t, double*) { return 0; }

#endif

}  // namespace kvwarden::kernels
