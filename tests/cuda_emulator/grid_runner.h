#pragma once

// Runs a kernel's grid on the calling thread: blocks one after another, each block's
// threads as fibers. Between two of the block's barriers, warps run one after another,
// each as far as it goes (through its own ballots), so a warp runs ahead of the others
// as it may on a GPU; warps and lanes go forward in one interval and backward in the
// next (the first direction alternates between launches). A read of another thread's
// write without a barrier in between therefore sees it in one order and not in the
// other. A barrier that cannot be met (a divergent __syncthreads, a ballot naming an
// exited lane) aborts with the block's position.

#include <cuda_runtime.h>

#include <functional>

namespace kvw_cuda_emulator {

// Not reentrant; callers serialise (the emulated device runs one operation at a time).
void RunGrid(dim3 grid, dim3 block, const std::function<void()>& body);

}  // namespace kvw_cuda_emulator
