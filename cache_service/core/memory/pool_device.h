#pragma once

// PoolDevice: the one dispatch point between the daemon and a pool's memory. Every byte
// the daemon moves in or out of pages (KV writes and reads, fork copies, compaction)
// goes through it, so a cpu pool runs the CPU kernels and a cuda:N pool the CUDA
// kernels next to its pages. Retention policies run their kernels next to the pages
// too, on the device's queue(), keeping what they share per device in PolicyLocal; the
// device itself knows no policy.
//
// Implementations are thread-safe.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache_service/core/memory/chunk_memory.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "cache_service/core/memory/chunk_memory.h"
#include "kernels/copy_kv.h"

namespace kvwarden {

class CudaQueue;  // cuda_queue.h, in builds with CUDA

class PoolDevice {
 public:
  virtual ~PoolDevice() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda:0"
  // The device's PCI bus id ("0000:3b:00.0"): how another process finds the same device
  // under its own CUDA_VISIBLE_DEVICES numbering. Empty for host memory.
  virtual std::string pci_bus_id() const { return ""; }

  // Allocates one chunk of pool memory on this device.
  virtual absl::StatusOr<std::unique_ptr<ChunkMemory>> NewChunk(const std::string& name, size_t bytes) = 0;

  // CopyKvCpu's contract, with `pages` in this device's memory and k/v in host memory.
  virtual absl::Status CopyKv(const kernels::PageGeometry& geometry, const std::vector<uint8_t*>& pages,
                              const std::vector<uint32_t>& begin, const std::vector<uint32_t>& count,
                              kernels::CopyDirection direction, uint8_t* k_host, uint8_t* v_host) = 0;
  // CompactLayerCpu's contract over one layer's pages. DATA_LOSS when the moves may have
  // run in part (a device error after launch); any other error: nothing moved.
  virtual absl::Status Compact(const kernels::PageGeometry& geometry, const std::vector<uint8_t*>& pages,
                               const std::vector<uint32_t>& kept_offsets,
                               const std::vector<uint32_t>& kept_slots) = 0;
  // Copies pages on this device, `bytes` each (a fork's copies, all queued together).
  struct PageCopy {
    uint8_t* dst;
    const uint8_t* src;
  };
  virtual absl::Status CopyPages(const std::vector<PageCopy>& copies, size_t bytes) = 0;
  // Pool bytes to host memory and back: staging for transports that cannot reach this
  // device's memory (UCX without CUDA support).
  virtual absl::Status CopyToHost(uint8_t* host_dst, const uint8_t* src, size_t bytes) = 0;
  virtual absl::Status CopyFromHost(uint8_t* dst, const uint8_t* host_src, size_t bytes) = 0;

  // The queue a policy's kernels run on next to this device's pages (its stream and
  // staging arena); null for host memory, where policies run their CPU kernels.
  virtual std::shared_ptr<CudaQueue> queue() const { return nullptr; }

  // What a policy keeps once per device (Scissorhands: the batcher every ring of the
  // device records through): made by `make` on first use, then the same object for
  // every caller passing the same `tag` (the address of something the policy owns).
  template <typename T>
  std::shared_ptr<T> PolicyLocal(const void* tag, absl::FunctionRef<std::shared_ptr<T>()> make) {
    return std::static_pointer_cast<T>(
        PolicyLocalErased(tag, [&]() -> std::shared_ptr<void> { return make(); }));
  }

 private:
  std::shared_ptr<void> PolicyLocalErased(const void* tag, absl::FunctionRef<std::shared_ptr<void>()> make);

  absl::Mutex locals_mu_;
  absl::flat_hash_map<const void*, std::shared_ptr<void>> locals_ ABSL_GUARDED_BY(locals_mu_);
};

std::shared_ptr<PoolDevice> CpuPoolDevice();
// "cuda:N": UNAVAILABLE when the build has no CUDA or device N is not visible.
absl::StatusOr<std::shared_ptr<PoolDevice>> CudaPoolDevice(int ordinal);

}  // namespace kvwarden
