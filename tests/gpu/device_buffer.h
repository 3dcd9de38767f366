#pragma once

#include <cuda_runtime.h>

#include <vector>

namespace kvwarden::testing {

// A device copy of a host vector (RAII). Tests only.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<T>& host) : size_(host.size()) {
    cudaMalloc(&ptr_, sizeof(T) * (size_ ? size_ : 1));
    if (size_) cudaMemcpy(ptr_, host.data(), sizeof(T) * size_, cudaMemcpyHostToDevice);
  }
  explicit DeviceBuffer(size_t n) : DeviceBuffer(std::vector<T>(n)) {}
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return ptr_; }
  std::vector<T> ToHost() const {
    std::vector<T> out(size_);
    cudaDeviceSynchronize();
    if (size_) cudaMemcpy(out.data(), ptr_, sizeof(T) * size_, cudaMemcpyDeviceToHost);
    return out;
  }

 private:
  T* ptr_ = nullptr;
  size_t size_;
};

}  // namespace kvwarden::testing
