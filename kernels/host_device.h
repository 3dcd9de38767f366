#pragma once

// Marks functions usable from both the CPU reference and CUDA kernels.
#if defined(__CUDACC__)
#define KVW_HOST_DEVICE __host__ __device__
#else
#define KVW_HOST_DEVICE
#endif
