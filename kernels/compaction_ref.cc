#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/compaction.h"

namespace kvwarden::kernels {
namespace {

// Generic 32-byte vectors, not intrinsics: in the AVX2 instances below each is one ymm
// load/store, in the baseline instances two SSE ones.
typedef long long Vec32 __attribute__((vector_size(32)));

// memmove for dst below src (or apart): forward in 64-byte blocks, each loaded whole
// before it is stored, so a block never overwrites source bytes not yet read. Inline
// blocks instead of a libc call per row: rows are a few hundred bytes and the call was
// most of the cost. kRowBytes != 0 fixes the row size so a one-row run is straight code.
template <size_t kRowBytes>
__attribute__((always_inline)) inline void MoveRowsDown(uint8_t* dst, const uint8_t* src, size_t rows,
                                                        size_t row_bytes) {
  const size_t bytes = rows * (kRowBytes != 0 ? kRowBytes : row_bytes);
  constexpr size_t kBlock = 64;
  size_t i = 0;
  for (; i + kBlock <= bytes; i += kBlock) {
    Vec32 lo, hi;
    std::memcpy(&lo, src + i, 32);
    std::memcpy(&hi, src + i + 32, 32);
    std::memcpy(dst + i, &lo, 32);
    std::memcpy(dst + i + 32, &hi, 32);
  }
  if ((kRowBytes == 0 || kRowBytes % kBlock != 0) && i < bytes) std::memmove(dst + i, src + i, bytes - i);
}

// Kept slots strictly ascending and inside the layer, for every head: checked whole
// before anything moves, so a bad head never leaves the others half done.
bool ValidKeptSlots(const PagedLayerView& layer, const uint32_t* kept_offsets, const uint32_t* kept_slots,
                    uint32_t* most_kept) {
  *most_kept = 0;
  for (uint32_t h = 0; h < layer.geometry.num_kv_heads; ++h) {
    const uint32_t begin = kept_offsets[h], end = kept_offsets[h + 1];
    if (end < begin) return false;
    for (uint32_t i = begin; i < end; ++i) {
      const uint32_t from = kept_slots[i];
      if (from >= layer.capacity_slots() || (i > begin && from <= kept_slots[i - 1])) return false;
    }
    *most_kept = std::max(*most_kept, end - begin);
  }
  return true;
}

// The pass, inlined into baseline and AVX2 entry points per common row size.
//
// Destination page by destination page, every head in it before the next page: the
// copies walk the layer's pages once, front to back. Head by head walked them once per
// head touching only that head's short stripe of each page, which the prefetchers and
// TLB served worse. Heads are independent, so interleaving whole heads' in-order passes
// moves the same bytes.
//
// Runs: consecutive sources to consecutive destinations, within one page on both sides,
// move as one copy. Ascending kept slots mean from >= to: a forward pass never
// overwrites a source, and in one page dst lies below src (else the pages differ).
// Page and in-page slot by shift and mask when page_tokens is a power of two (the usual
// case): a division per slot costs more than copying its row.
template <size_t kRowBytes>
__attribute__((always_inline)) inline void CompactImpl(const PagedLayerView& layer, const uint32_t* kept_offsets,
                                                       const uint32_t* kept_slots, uint32_t most_kept) {
  const PageGeometry& g = layer.geometry;
  const size_t tb = g.token_bytes(), half = g.half_bytes();
  const uint32_t pt = g.page_tokens, heads = g.num_kv_heads;
  const bool pow2 = (pt & (pt - 1)) == 0;
  const uint32_t shift = static_cast<uint32_t>(__builtin_ctz(pt)), mask = pt - 1;
  std::vector<uint32_t> cursor(kept_offsets, kept_offsets + heads);
  for (uint32_t page_first = 0; page_first < most_kept; page_first += pt) {
    for (uint32_t h = 0; h < heads; ++h) {
      const uint32_t begin = kept_offsets[h];
      const uint32_t end = static_cast<uint32_t>(std::min<uint64_t>(kept_offsets[h + 1], uint64_t{begin} + page_first + pt));
      const size_t head_offset = h * g.head_stride();
      uint32_t i = cursor[h];
      while (i < end) {
        const uint32_t to = i - begin, from = kept_slots[i];
        const uint32_t to_page = pow2 ? to >> shift : to / pt, to_in = pow2 ? to & mask : to % pt;
        const uint32_t from_page = pow2 ? from >> shift : from / pt, from_in = pow2 ? from & mask : from % pt;
        const uint32_t limit = std::min({pt - to_in, pt - from_in, end - i});
        uint32_t run = 1;
        while (run < limit && kept_slots[i + run] == from + run) ++run;
        if (from != to) {
          uint8_t* dst = layer.pages[to_page] + head_offset + to_in * tb;
          const uint8_t* src = layer.pages[from_page] + head_offset + from_in * tb;
          MoveRowsDown<kRowBytes>(dst, src, run, tb);
          MoveRowsDown<kRowBytes>(dst + half, src + half, run, tb);
        }
        i += run;
      }
      cursor[h] = i;
    }
  }
}

// Rows of 128, 256 and 512 bytes (head_dim 64/128/256 in fp16) get fixed-size copies.
template <typename Fn>
__attribute__((always_inline)) inline void ByRowBytes(size_t row_bytes, Fn&& fn) {
  switch (row_bytes) {
    case 128: return fn(std::integral_constant<size_t, 128>{});
    case 256: return fn(std::integral_constant<size_t, 256>{});
    case 512: return fn(std::integral_constant<size_t, 512>{});
    default: return fn(std::integral_constant<size_t, 0>{});
  }
}

void CompactBaseline(const PagedLayerView& layer, const uint32_t* kept_offsets, const uint32_t* kept_slots,
                     uint32_t most_kept) {
  ByRowBytes(layer.geometry.token_bytes(), [&](auto row_bytes) {
    CompactImpl<decltype(row_bytes)::value>(layer, kept_offsets, kept_slots, most_kept);
  });
}

#if defined(__x86_64__)
// The same code with 32-byte moves: about 0.66 -> 0.82x of memcpy in cache and
// 0.44 -> 0.66x from DRAM for one-row runs (bench_kernels, this machine).
__attribute__((target("avx2"))) void CompactAvx2(const PagedLayerView& layer, const uint32_t* kept_offsets,
                                                 const uint32_t* kept_slots, uint32_t most_kept) {
  ByRowBytes(layer.geometry.token_bytes(), [&](auto row_bytes) __attribute__((always_inline)) {
    CompactImpl<decltype(row_bytes)::value>(layer, kept_offsets, kept_slots, most_kept);
  });
}
#endif

}  // namespace

KernelStatus CompactLayerCpu(const PagedLayerView& layer, const uint32_t* kept_offsets,
                             const uint32_t* kept_slots) {
  uint32_t most_kept = 0;
  if (kept_offsets == nullptr || layer.geometry.page_tokens == 0 ||
      !ValidKeptSlots(layer, kept_offsets, kept_slots, &most_kept)) {
    return KernelStatus::kInvalidArgument;
  }
#if defined(__x86_64__)
  static const bool have_avx2 = __builtin_cpu_supports("avx2");
  if (have_avx2) {
    CompactAvx2(layer, kept_offsets, kept_slots, most_kept);
    return KernelStatus::kOk;
  }
#endif
  CompactBaseline(layer, kept_offsets, kept_slots, most_kept);
  return KernelStatus::kOk;
}

}  // namespace kvwarden::kernels
