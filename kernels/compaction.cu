// CUDA version of CompactLayerCpu (compaction_ref.cc). Parallel in-place moves would race
// (slot i may be read by one thread while another writes it), so kept slots are gathered
// into scratch, then written back to the front of each head.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/compaction.h"
#include "kernels/launch_status.cuh"

namespace kvwarden::kernels {
namespace {

// Threads stride over a head's kept rows in `Unit`-sized pieces: 16-byte vectors when
// rows and scratch allow (rows of fp16 head_dim 8 and up), bytes otherwise. Page bases
// are 16-byte aligned whenever rows are (pages start at multiples of the page size in
// cudaMalloc'ed chunks, and a page is a whole number of rows).
template <typename Unit, bool kGather>
__global__ void MoveKernel(PagedLayerView layer, const uint32_t* kept_offsets, const uint32_t* kept_slots,
                           uint8_t* scratch, uint32_t total_kept) {
  const uint32_t h = blockIdx.y;
  const uint32_t units = static_cast<uint32_t>(layer.geometry.token_bytes() / sizeof(Unit));
  const uint32_t begin = kept_offsets[h], count = kept_offsets[h + 1] - begin;
  Unit* k_scratch = reinterpret_cast<Unit*>(scratch);
  Unit* v_scratch = k_scratch + size_t{total_kept} * units;
  const size_t total = size_t{count} * units;
  for (size_t u = blockIdx.x * size_t{blockDim.x} + threadIdx.x; u < total; u += size_t{gridDim.x} * blockDim.x) {
    const uint32_t i = static_cast<uint32_t>(u / units), within = static_cast<uint32_t>(u % units);
    const size_t s = (size_t{begin} + i) * units + within;
    if (kGather) {
      const uint32_t from = kept_slots[begin + i];
      k_scratch[s] = reinterpret_cast<const Unit*>(layer.k(h, from))[within];
      v_scratch[s] = reinterpret_cast<const Unit*>(layer.v(h, from))[within];
    } else {
      reinterpret_cast<Unit*>(layer.k(h, i))[within] = k_scratch[s];
      reinterpret_cast<Unit*>(layer.v(h, i))[within] = v_scratch[s];
    }
  }
}

template <typename Unit>
void LaunchMoves(const PagedLayerView& layer, const uint32_t* kept_offsets, const uint32_t* kept_slots,
                 uint32_t total_kept, uint8_t* scratch, cudaStream_t s) {
  // Enough blocks per head for its share of the pieces (256 threads each), at most 1024.
  const uint32_t heads = layer.geometry.num_kv_heads;
  const uint64_t pieces = uint64_t{total_kept} * (layer.geometry.token_bytes() / sizeof(Unit));
  const uint64_t per_head = (pieces + heads - 1) / heads;
  const dim3 grid(static_cast<uint32_t>(per_head / 256 + 1 < 1024 ? per_head / 256 + 1 : 1024), heads);
  MoveKernel<Unit, true><<<grid, 256, 0, s>>>(layer, kept_offsets, kept_slots, scratch, total_kept);
  MoveKernel<Unit, false><<<grid, 256, 0, s>>>(layer, kept_offsets, kept_slots, scratch, total_kept);
}

}  // namespace

KernelStatus CompactLayerCuda(const PagedLayerView& layer, const uint32_t* kept_offsets,
                              const uint32_t* kept_slots, uint32_t total_kept, uint8_t* scratch,
                              void* stream) {
  if (kept_offsets == nullptr || layer.geometry.page_tokens == 0 || layer.pages == nullptr ||
      (total_kept > 0 && (kept_slots == nullptr || scratch == nullptr))) {
    return KernelStatus::kInvalidArgument;
  }
  if (total_kept == 0 || layer.geometry.num_kv_heads == 0 || layer.geometry.token_bytes() == 0) {
    return KernelStatus::kOk;
  }
  auto s = static_cast<cudaStream_t>(stream);
  ClearStaleCudaError();
  if (layer.geometry.token_bytes() % 16 == 0 && reinterpret_cast<uintptr_t>(scratch) % 16 == 0) {
    LaunchMoves<uint4>(layer, kept_offsets, kept_slots, total_kept, scratch, s);
  } else {
    LaunchMoves<uint8_t>(layer, kept_offsets, kept_slots, total_kept, scratch, s);
  }
  return LaunchStatus();
}

}  // namespace kvwarden::kernels
