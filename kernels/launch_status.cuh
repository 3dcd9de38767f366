#pragma once

// The launchers' error handling, shared by every .cu file. cudaGetLastError() returns
// (and clears) the last error of any CUDA call on this thread, so a check after a launch
// alone could report an earlier, unrelated failure (a cudaMalloc, an IPC call) as this
// launch's and make a caller believe a kernel that ran did not. Launchers clear first,
// launch, then report.
#include <cuda_runtime.h>

#include "kernels/kernel_status.h"

namespace kvwarden::kernels {

// Before the first launch of a launcher (after its argument checks).
inline void ClearStaleCudaError() { (void)cudaGetLastError(); }

// After the launches: kDeviceError means they may or may not have run.
inline KernelStatus LaunchStatus() {
  return cudaGetLastError() == cudaSuccess ? KernelStatus::kOk : KernelStatus::kDeviceError;
}

}  // namespace kvwarden::kernels
