#include "cache_service/core/memory/cuda_queue.h"

#if defined(KVW_HAVE_CUDA)

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "cache_service/util/log.h"

namespace kvwarden {

absl::Status CudaError(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

absl::StatusOr<std::shared_ptr<CudaQueue>> CudaQueue::Create(int ordinal) {
  std::shared_ptr<CudaQueue> q(new CudaQueue(ordinal));
  q->Use();
  if (absl::Status s = CudaError(cudaStreamCreateWithFlags(&q->stream_, cudaStreamNonBlocking), "cudaStreamCreate");
      !s.ok()) {
    return s;
  }
  return q;
}

CudaQueue::~CudaQueue() {
  Use();
  absl::MutexLock lock(&mu_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  FreeHostArena();
  if (device_ != nullptr) cudaFree(device_);
}

// The pinned and device arenas grow apart: staged inputs need both, device-only scratch
// (a compaction's gather buffer can be megabytes) only the device side.
absl::Status CudaQueue::GrowPinned(size_t bytes) {
  if (bytes <= pinned_capacity_) return absl::OkStatus();
  const size_t want = std::max<size_t>({bytes, 2 * pinned_capacity_, 1 << 20});
  FreeHostArena();
  void* host = nullptr;
  if (cudaMallocHost(&host, want) != cudaSuccess) {
    // Page-locking refused (a sandbox, or a locked-memory limit): ordinary memory still
    // copies correctly, cudaMemcpyAsync then returns once the driver has taken the bytes.
    cudaGetLastError();
    host = std::malloc(want);
    if (host == nullptr)
      return absl::ResourceExhaustedError("CUDA staging arena: out of host memory");
    if (!pageable_) {
      LogEvent(LogLevel::kWarning, "cuda_staging_pageable")
          .Field("device", ordinal_)
          .Field("bytes", want);
    }
    pageable_ = true;
  } else {
    pageable_ = false;
  }
  pinned_ = static_cast<uint8_t*>(host);
  pinned_capacity_ = want;
  return absl::OkStatus();
}

void CudaQueue::FreeHostArena() {
  if (pinned_ != nullptr) pageable_ ? std::free(pinned_) : static_cast<void>(cudaFreeHost(pinned_));
  pinned_ = nullptr;
  pinned_capacity_ = 0;
}

absl::Status CudaQueue::GrowDevice(size_t bytes) {
  if (bytes <= device_capacity_) return absl::OkStatus();
  const size_t want = std::max<size_t>({bytes, 2 * device_capacity_, 1 << 20});
  if (device_ != nullptr) cudaFree(device_);
  device_ = nullptr;
  device_capacity_ = 0;
  void* dev = nullptr;
  if (absl::Status s = CudaError(cudaMalloc(&dev, want), "cudaMalloc staging"); !s.ok()) return s;
  device_ = static_cast<uint8_t*>(dev);
  device_capacity_ = want;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<void*>> CudaQueue::Stage(const std::vector<Part>& parts) {
  Use();
  std::vector<size_t> at;
  size_t end = 0, copied = 0;
  for (const Part& p : parts) {
    end = (end + 255) / 256 * 256;
    at.push_back(end);
    end += p.bytes;
    if (p.host != nullptr) copied = end;
  }
  if (absl::Status s = GrowPinned(copied); !s.ok()) return s;
  if (absl::Status s = GrowDevice(end); !s.ok()) return s;
  std::vector<void*> out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].host != nullptr && parts[i].bytes > 0) std::memcpy(pinned_ + at[i], parts[i].host, parts[i].bytes);
    out.push_back(device_ + at[i]);
  }
  if (copied > 0) {
    if (absl::Status s = CudaError(cudaMemcpyAsync(device_, pinned_, copied, cudaMemcpyHostToDevice, stream_),
                                   "cudaMemcpyAsync staging");
        !s.ok()) {
      return s;
    }
  }
  return out;
}

absl::StatusOr<const void*> CudaQueue::Fetch(const void* device, size_t bytes) {
  Use();
  // The staged inputs may still be read by queued kernels: fetch past nothing they use
  // by waiting first, then reuse the pinned arena from its start.
  if (absl::Status s = Sync(); !s.ok()) return s;
  if (absl::Status s = GrowPinned(bytes); !s.ok()) return s;
  if (absl::Status s = CudaError(cudaMemcpyAsync(pinned_, device, bytes, cudaMemcpyDeviceToHost, stream_),
                                 "cudaMemcpyAsync fetch");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Sync(); !s.ok()) return s;
  return static_cast<const void*>(pinned_);
}

absl::Status CudaQueue::Sync() { return CudaError(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

}  // namespace kvwarden

#endif  // KVW_HAVE_CUDA
