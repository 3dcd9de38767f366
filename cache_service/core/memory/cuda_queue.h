#pragma once

// One CUDA device's queue for the daemon's policy kernels (PoolDevice::queue):
// a stream, and an arena of pinned host memory (ordinary memory where page-locking is
// refused) mirrored by device memory, through which a message's small arrays go to the
// device in one copy. Only with KVW_HAVE_CUDA.
//
// Thread-safety: callers hold mu() from staging their inputs until they synchronized
// the stream, so the arena is one caller's at a time.

#if defined(KVW_HAVE_CUDA)

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace kvwarden {

absl::Status CudaError(cudaError_t e, const char* what);

class CudaQueue {
 public:
  static absl::StatusOr<std::shared_ptr<CudaQueue>> Create(int ordinal);
  ~CudaQueue();
  CudaQueue(const CudaQueue&) = delete;
  CudaQueue& operator=(const CudaQueue&) = delete;

  int ordinal() const { return ordinal_; }
  cudaStream_t stream() const { return stream_; }
  absl::Mutex& mu() ABSL_LOCK_RETURNED(mu_) { return mu_; }

  // A batch of host arrays to copy to the device, plus device-only scratch.
  struct Part {
    const void* host = nullptr;  // null: scratch, not copied
    size_t bytes = 0;
  };
  // Lays `parts` out in the arena (256-byte aligned), copies the host ones into pinned
  // memory and issues one host-to-device copy on the stream. Returns each part's
  // device address. Requires mu(). Growing the arena waits for nothing: callers sync
  // before they release mu(), so no queued work still uses the old one.
  absl::StatusOr<std::vector<void*>> Stage(const std::vector<Part>& parts) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Copies `bytes` from the device to the arena's pinned memory and waits for the
  // stream; returns the pinned address (valid until mu() is released). Requires mu().
  absl::StatusOr<const void*> Fetch(const void* device, size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits for everything issued on the stream. Requires mu().
  absl::Status Sync() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes the device current on the calling thread.
  void Use() const { cudaSetDevice(ordinal_); }

 private:
  explicit CudaQueue(int ordinal) : ordinal_(ordinal) {}
  absl::Status GrowPinned(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeHostArena() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status GrowDevice(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int ordinal_;
  cudaStream_t stream_ = nullptr;
  absl::Mutex mu_;
  uint8_t* pinned_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint8_t* device_ ABSL_GUARDED_BY(mu_) = nullptr;
  size_t pinned_capacity_ ABSL_GUARDED_BY(mu_) = 0;
  bool pageable_ ABSL_GUARDED_BY(mu_) = false;  // pinned_ from malloc: page-locking was refused
  size_t device_capacity_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvwarden

#endif  // KVW_HAVE_CUDA
