// gpu_check.sh's first step: proves that the carried binaries reach the driver and a
// device, and prints what they found. Exit 0 only with at least one device that can
// allocate, copy and synchronise; otherwise 1 with the CUDA error, so a device check can
// never pass by skipping.
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

int main() {
  int runtime = 0, driver = 0, count = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  const cudaError_t e = cudaGetDeviceCount(&count);
  std::printf("cuda runtime %d, driver %d, devices %d%s%s\n", runtime, driver, count,
              e == cudaSuccess ? "" : ", error: ", e == cudaSuccess ? "" : cudaGetErrorString(e));
  if (e != cudaSuccess || count == 0) return 1;
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) return 1;
    std::printf("device %d: %s, sm_%d%d, %.1f GiB, pci %04x:%02x:%02x\n", d, p.name, p.major,
                p.minor, p.totalGlobalMem / 1073741824.0, p.pciDomainID, p.pciBusID, p.pciDeviceID);
  }
  // One round trip through device memory.
  std::vector<unsigned char> in(1 << 20, 0x5a), out(in.size(), 0);
  void* dev = nullptr;
  if (cudaSetDevice(0) != cudaSuccess || cudaMalloc(&dev, in.size()) != cudaSuccess ||
      cudaMemcpy(dev, in.data(), in.size(), cudaMemcpyHostToDevice) != cudaSuccess ||
      cudaMemcpy(out.data(), dev, out.size(), cudaMemcpyDeviceToHost) != cudaSuccess ||
      cudaDeviceSynchronize() != cudaSuccess || out != in) {
    std::printf("device 0: round trip failed: %s\n", cudaGetErrorString(cudaGetLastError()));
    return 1;
  }
  cudaFree(dev);
  std::printf("device 0: 1 MiB round trip ok\n");
  return 0;
}
