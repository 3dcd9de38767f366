#pragma once

// kvwarden's CUDA emulator: the part of the CUDA runtime API kvwarden uses, on the CPU,
// so builds without a GPU (CI's sanitizer build) run every CUDA code path: the kernels
// (kernels/*.cu, their <<<>>> launches rewritten by rewrite_launches.cmake), the cuda:N
// pool device, its staging queue, and IPC-attached chunks in worker processes.
//
// It is strict where a GPU is forgiving only by luck (README.md beside this file):
// device memory is PROT_NONE to the host outside device work, asynchronous work runs as
// late as CUDA allows (at the synchronisation that waits for it), cudaMalloc'd memory
// starts as garbage, copies check that their pointers match their direction, and a
// block's threads are fibers that run between barriers in alternating orders, so a
// missing __syncthreads or a host read before a sync shows as a wrong result or a crash.
// It says nothing about speed, and cannot find data races within one barrier interval.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define KVW_CUDA_EMULATOR 1

// Device-code qualifiers: kernels are ordinary functions; __shared__ variables are
// statics, which is right because the emulated device runs one block at a time.
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __forceinline__ inline

struct uint3 {
  unsigned int x, y, z;
};
struct uint4 {
  unsigned int x, y, z, w;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
};

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorMapBufferObjectFailed = 205,
};

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUevent_st;
using cudaEvent_t = CUevent_st*;

#define cudaStreamLegacy (reinterpret_cast<cudaStream_t>(0x1))
#define cudaStreamPerThread (reinterpret_cast<cudaStream_t>(0x2))
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaIpcMemLazyEnablePeerAccess 0x01

struct cudaIpcMemHandle_t {
  char reserved[64];
};

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
// Device N's bus id is "0000:0N:00.0" here.
cudaError_t cudaDeviceGetPCIBusId(char* pci_bus_id, int len, int device);
cudaError_t cudaDeviceGetByPCIBusId(int* device, const char* pci_bus_id);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);

cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
cudaError_t cudaFreeHost(void* ptr);
template <typename T>
cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
template <typename T>
cudaError_t cudaMallocHost(T** ptr, size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(ptr), bytes);
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = nullptr);

cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);

cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t* handle, void* ptr);
cudaError_t cudaIpcOpenMemHandle(void** ptr, cudaIpcMemHandle_t handle, unsigned int flags);
cudaError_t cudaIpcCloseMemHandle(void* ptr);

// Built-in variables and intrinsics of device code. The scheduler sets the variables
// before it resumes each emulated thread; one OS thread runs a grid at a time.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

void __syncthreads();
unsigned int __ballot_sync(unsigned int mask, int predicate);
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
// Emulated threads never run at the same time, so a read-modify-write is atomic.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

namespace kvw_cuda_emulator {

// Queues a grid on `stream` (checked as CUDA checks a launch's configuration; a bad one
// sets the last error and queues nothing). `body` runs once per emulated thread.
void EnqueueGrid(dim3 grid, dim3 block, size_t dynamic_shared, cudaStream_t stream,
                 std::function<void()> body);

// What `kernel<<<grid, block, shared, stream>>>(args...)` becomes in an emulated .cu:
// `Launcher(grid, block, shared, stream)(kernel, args...)`. Arguments convert to the
// kernel's parameter types at the launch, as CUDA copies them then.
class Launcher {
 public:
  Launcher(dim3 grid, dim3 block, size_t dynamic_shared = 0, cudaStream_t stream = nullptr)
      : grid_(grid), block_(block), shared_(dynamic_shared), stream_(stream) {}
  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), Args&&... args) const {
    std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
    EnqueueGrid(grid_, block_, shared_, stream_,
                [kernel, params]() { std::apply(kernel, params); });
  }

 private:
  dim3 grid_, block_;
  size_t shared_;
  cudaStream_t stream_;
};

}  // namespace kvw_cuda_emulator
