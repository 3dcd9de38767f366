#pragma once

// PoolDevice: the one dispatch point between the daemon and a pool's memory. Every byte
// the daemon moves in or out of pages (KV writes and reads, fork copies, compaction)
// goes through it, so a cpu pool runs the CPU kernels and a cuda:N pool the CUDA
// kernels next to its pages. Retention decisions run there too: a sequence's
// Scissorhands history lives in its pool's memory (NewScissorhandsRings) and WindowKV
// scores and selects on the pool's device.
//
// Implementations are thread-safe.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache_service/core/chunk_memory.h"
#include "cache_service/core/scissorhands_rings.h"
#include "kernels/copy_kv.h"
#include "kernels/windowkv.h"

namespace kvwarden {

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

  // Policy work next to the pages. A sequence's Scissorhands history for `heads`
  // (layer, head)s, in this device's memory.
  virtual absl::StatusOr<std::unique_ptr<ScissorhandsRings>> NewScissorhandsRings(size_t heads,
                                                                                  uint32_t window) = 0;
  // WindowKV for one group of n tokens: scores the n - alpha candidates from `sums`
  // ([head][candidate], host memory) and returns the keep mask over all n tokens.
  virtual absl::Status WindowKvKeep(const std::vector<float>& sums, uint32_t heads, uint32_t n,
                                    const kernels::WindowKvParams& p, std::vector<uint8_t>* keep) = 0;
};

std::shared_ptr<PoolDevice> CpuPoolDevice();
// "cuda:N": UNAVAILABLE when the build has no CUDA or device N is not visible.
absl::StatusOr<std::shared_ptr<PoolDevice>> CudaPoolDevice(int ordinal);

}  // namespace kvwarden
