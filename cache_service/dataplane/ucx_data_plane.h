#pragma once

// The daemon's UCX side of the data plane: one UCX worker whose address workers on this
// host connect to, and per-chunk memory registrations whose packed remote keys go (over
// gRPC) only to the chunk's current tenant. Workers move pages with one-sided RMA over
// shared memory. UCX serves emulated RMA (and RMA with a forged key) at any address, so
// the boundary is who can connect: the worker runs only posix (and self) with /proc
// links forced on, which admits only the daemon's own user (ucx::BoundedTransports says
// why). A thread named "kvw-ucx" progresses the worker (wire-up, emulated RMA into memfd
// chunks) and sleeps on its event fd. Workers of other users and other hosts use
// TcpDataServer or attach.
//
// Chunks from NewChunk carry the key of their allocation. Other chunks (memfd) are
// registered lazily, on the first key asked for them, and again when their generation
// changed (memory renewed for another tenant), so a key handed to the previous owner
// never names the new owner's pages on transports that check keys (RDMA). GPU pools go
// through staging buffers (Stage/Unstage): Debian's UCX has no CUDA memory support.
//
// Thread-safe: Key() may be called from any thread; the worker is touched only by
// "kvw-ucx" once Start returns.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cache_service/core/memory/chunk_memory.h"
#include "cache_service/core/memory/page_pool.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "common/ucx/ucx.h"

namespace kvwarden {

struct ChunkRemoteKey {
  uint32_t chunk = 0;
  uint64_t generation = 0;
  uint64_t remote_address = 0;
  uint64_t size = 0;
  std::string rkey;
};

class UcxDataPlane {
 public:
  struct Options {
    std::string transports;  // UCX_TLS; "" = environment / UCX default
    std::string net_devices;  // UCX_NET_DEVICES; "" = environment / every interface
    // Route every pool through staging buffers, as pools UCX cannot reach are (tests).
    bool stage_all_pools = false;
  };
  // Chunk ids with this bit name a staging buffer that exists for one transfer only.
  static constexpr uint32_t kStagingChunkBit = 1u << 31;
  static absl::StatusOr<std::unique_ptr<UcxDataPlane>> Start(const Options& options);
  ~UcxDataPlane();
  UcxDataPlane(const UcxDataPlane&) = delete;
  UcxDataPlane& operator=(const UcxDataPlane&) = delete;

  const std::string& worker_address() const { return address_; }
  // Host memory for a CPU pool's chunk, allocated by UCX's POSIX shared-memory domain so
  // same-host peers move pages with plain copies (ucx_perftest's memory, too). It still
  // has an fd (UCX keeps one for /proc links), so attach works as with memfd chunks.
  // Fails (callers fall back to memfd) when /dev/shm cannot hold it: tmpfs pages past its
  // size would fault with SIGBUS when first touched, so every chunk promised so far must
  // fit in what /dev/shm had free at start.
  absl::StatusOr<std::unique_ptr<ChunkMemory>> NewChunk(size_t bytes);
  // The key for `chunk` of `pool` at `generation` (what the pool says now).
  absl::StatusOr<ChunkRemoteKey> Key(const PagePool& pool, uint32_t chunk, uint64_t generation);

  // Pools whose memory UCX cannot reach (GPU memory with a UCX built without CUDA, as
  // Debian's) move through a host staging buffer per transfer: Stage copies the granted
  // pages in ([layer][page], one run per layer) and returns its key; Unstage copies a
  // write transfer's buffer back (while the pages are still pinned) and frees it.
  bool NeedsStaging(const PagePool& pool) const { return stage_all_ || pool.device() != "cpu"; }
  absl::StatusOr<ChunkRemoteKey> Stage(TenantId tenant, TransferMode mode,
                                       const TransferGrant& grant);
  // For SequenceTable::Options::on_transfer_ended. Without copy_back (an abandoned
  // transfer) the buffer is only freed. OK when `id` was not staged.
  absl::Status Unstage(TransferId id, bool copy_back);

 private:
  UcxDataPlane() = default;
  struct Staged {
    TenantId tenant = kNoTenant;
    TransferMode mode = TransferMode::kRead;
    PagePool* pool = nullptr;
    std::vector<std::pair<uint8_t*, size_t>> runs;  // device address, bytes; buffer order
    ucx::MemoryRegion buffer;
  };
  struct Registration {
    uint64_t generation = 0;
    ucx::MemoryRegion region;
  };

  ucx::Context context_;
  ucx::Worker worker_;
  std::string address_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::pair<const PagePool*, uint32_t>, Registration> registered_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<TransferId, Staged> staged_ ABSL_GUARDED_BY(mu_);
  bool stage_all_ = false;
  uint64_t shm_free_at_start_ = 0;
  std::atomic<uint64_t> shm_promised_{0};
  std::atomic<bool> stop_{false};
  std::thread progress_;
};

}  // namespace kvwarden
