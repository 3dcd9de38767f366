// CUDA versions of scissorhands_ref.cc. Selection equals the reference exactly: instead
// of sorting, each head finds the low count T of the last evicted slot with a histogram,
// evicts every candidate above T, and the oldest candidates at T in slot order.
#include <cuda_runtime.h>

#include "kernels/scissorhands.h"
#include "kernels/launch_status.cuh"

namespace kvwarden::kernels {
namespace {

constexpr uint32_t kThreads = 256;

// One block per group (one head of one sequence and its steps), walking the group's
// descriptors in order: a plane is only ever written by one block, and its steps in turn.
__global__ void RecordBatchKernel(const ScissorhandsRecordHead* heads, const uint32_t* group_ends,
                                  const uint32_t* ids) {
  const uint32_t begin = blockIdx.x > 0 ? group_ends[blockIdx.x - 1] : 0, end = group_ends[blockIdx.x];
  for (uint32_t d = begin; d < end; ++d) {
    const ScissorhandsRecordHead h = heads[d];
    for (uint32_t j = threadIdx.x; j < h.live; j += blockDim.x) {
      h.plane[j] = j < h.attended ? (h.plane[j] | h.mask) : (h.plane[j] & ~h.mask);
    }
    __syncthreads();
    for (uint32_t i = h.listed_begin + threadIdx.x; i < h.listed_end; i += blockDim.x) {
      const uint32_t j = ids[i];
      if (j < h.attended) h.plane[j] &= ~h.mask;
    }
    __syncthreads();  // the next step of this head reads what this one wrote
  }
}

__global__ void SelectKernel(Segments slots, ScissorhandsHistory history, ScissorhandsParams p,
                             uint8_t* keep, uint32_t* low) {
  __shared__ uint32_t hist[kScissorhandsMaxWindow + 1];
  __shared__ uint32_t warp_counts[kThreads / 32];
  __shared__ uint32_t threshold, take_at_threshold, carried;
  const uint32_t h = blockIdx.x;
  const uint32_t base = slots.begin(h), n = slots.size(h);
  for (uint32_t i = threadIdx.x; i <= p.window; i += blockDim.x) hist[i] = 0;
  __syncthreads();
  const uint32_t evict = ScissorhandsEvictCount(n, p);
  const uint32_t lo = p.sinks, hi = n > p.recent ? n - p.recent : 0;
  for (uint32_t j = threadIdx.x; j < n; j += blockDim.x) {
    uint32_t c = 0;
    for (uint32_t w = 0; w < history.words(); ++w) c += PopCount32(history.plane(h, w)[j]);
    low[base + j] = c;
    keep[base + j] = 1;
    // Binned as the CPU bins it: bits past the window (stale words) must neither pick a
    // bin past the histogram's end nor rank differently.
    if (evict > 0 && j >= lo && j < hi) atomicAdd(&hist[c < p.window ? c : p.window], 1u);
  }
  __syncthreads();
  if (evict == 0) return;
  if (threadIdx.x == 0) {
    // Largest T such that the candidates with I >= T number at least `evict`.
    uint32_t above = 0, t = p.window;
    while (above + hist[t] < evict) above += hist[t--];
    threshold = t;
    take_at_threshold = evict - above;
    carried = 0;
  }
  __syncthreads();
  const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  // Tiles in slot order; an exclusive prefix of "I == T" flags ranks the ties by age.
  for (uint32_t tile = lo; tile < hi; tile += blockDim.x) {
    const uint32_t j = tile + threadIdx.x;
    const uint32_t c = j < hi ? (low[base + j] < p.window ? low[base + j] : p.window) : 0;
    const bool at_t = j < hi && c == threshold;
    const uint32_t ballot = __ballot_sync(0xffffffffu, at_t);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    uint32_t rank = carried + __popc(ballot & ((1u << lane) - 1));
    for (uint32_t w = 0; w < warp; ++w) rank += warp_counts[w];
    if (j < hi && (c > threshold || (at_t && rank < take_at_threshold))) keep[base + j] = 0;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (uint32_t w = 0; w < blockDim.x / 32; ++w) carried += warp_counts[w];
    }
    __syncthreads();
  }
}

// Two phases through scratch ([word][k]): threads of one plane would otherwise read
// sources other threads already overwrote.
__global__ void GatherKeptKernel(ScissorhandsHistory history, uint32_t head, const uint32_t* kept, uint32_t k,
                                 uint32_t* scratch) {
  const uint32_t w = blockIdx.x;
  const uint32_t* plane = history.plane(head, w);
  for (uint32_t i = threadIdx.x; i < k; i += blockDim.x) scratch[static_cast<size_t>(w) * k + i] = plane[kept[i]];
}

__global__ void ScatterKeptKernel(ScissorhandsHistory history, uint32_t head, uint32_t k, uint32_t old_live,
                                  const uint32_t* scratch) {
  const uint32_t w = blockIdx.x;
  uint32_t* plane = history.plane(head, w);
  for (uint32_t i = threadIdx.x; i < old_live; i += blockDim.x) {
    plane[i] = i < k ? scratch[static_cast<size_t>(w) * k + i] : 0u;
  }
}

}  // namespace

KernelStatus ScissorhandsCompactHeadCuda(ScissorhandsHistory history, uint32_t head, const uint32_t* kept,
                                         uint32_t k, uint32_t old_live, uint32_t* scratch, void* stream) {
  if (history.planes == nullptr || history.window == 0 || k > old_live || old_live > history.stride ||
      (k > 0 && (kept == nullptr || scratch == nullptr))) {
    return KernelStatus::kInvalidArgument;
  }
  if (old_live == 0) return KernelStatus::kOk;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  ClearStaleCudaError();
  if (k > 0) GatherKeptKernel<<<history.words(), kThreads, 0, s>>>(history, head, kept, k, scratch);
  ScatterKeptKernel<<<history.words(), kThreads, 0, s>>>(history, head, k, old_live, scratch);
  return LaunchStatus();
}

KernelStatus ScissorhandsRecordBatchCuda(const ScissorhandsRecordHead* heads, const uint32_t* group_ends,
                                         uint32_t num_groups, const uint32_t* ids, void* stream) {
  if (num_groups == 0) return KernelStatus::kOk;
  if (heads == nullptr || group_ends == nullptr) return KernelStatus::kInvalidArgument;
  ClearStaleCudaError();
  RecordBatchKernel<<<num_groups, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(heads, group_ends, ids);
  return LaunchStatus();
}

KernelStatus ScissorhandsSelectCuda(Segments slots, ScissorhandsHistory history, ScissorhandsParams p,
                                    uint8_t* keep, uint32_t* low_counts, void* stream) {
  if (p.window == 0 || p.window > kScissorhandsMaxWindow || p.window != history.window ||
      !ScissorhandsProtectedFit(p) || keep == nullptr || history.planes == nullptr ||
      low_counts == nullptr) {
    return KernelStatus::kInvalidArgument;
  }
  if (slots.num_heads == 0) return KernelStatus::kOk;
  ClearStaleCudaError();
  SelectKernel<<<slots.num_heads, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      slots, history, p, keep, low_counts);
  return LaunchStatus();
}

}  // namespace kvwarden::kernels
