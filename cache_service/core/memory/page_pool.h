#pragma once

// PagePool: fixed-size KV pages of one layout on one device.
//
// Memory comes in chunks; a chunk belongs to at most one tenant at a time and a tenant's
// pages come only from its own chunks. An empty chunk goes back to the pool and is
// renewed (fresh, zeroed memory) before another tenant gets it; one shared in a way
// renewal cannot revoke (a CUDA IPC handle) only ever goes back to its tenant.
// Allocation and free are O(1) per page.
//
// Each page carries a refcount (sequences sharing it after a fork) and a pin count
// (transfers or mapped reads in flight). A page is returned to its chunk only when
// both reach zero; the tenant stays charged until then (on_pages_freed reports it).
//
// Thread-safe: all methods may be called concurrently. Page bytes are not guarded
// here; callers order byte access with their own (per-sequence) locks.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "cache_service/core/memory/chunk_memory.h"
#include "cache_service/core/ids.h"
#include "cache_service/core/memory/kv_layout.h"
#include "cache_service/core/memory/pool_device.h"

namespace kvwarden {

struct PagePoolOptions {
  std::string name;
  // Where the pages live and how bytes move in and out of them (default: cpu).
  std::shared_ptr<PoolDevice> device;
  KvLayout layout;
  uint32_t chunk_pages = 0;  // pages per chunk, >= 1
  uint32_t num_chunks = 0;   // >= 1
  // Above this share of capacity, compressible sequences get tighter budgets before any
  // reservation is refused. 100 turns that off.
  uint32_t high_water_percent = 90;
  // Default: the device's chunks (memfd on cpu) named "kvwarden:<pool>:<index>".
  ChunkFactory chunk_factory;
  // Make every chunk at Create (the factory's cost up front, e.g. UCX zero-filling
  // shared memory). Default: a chunk is made when a tenant first claims it, so a pool
  // of any size is ready at once.
  bool preallocate = false;
  // Called (outside the pool's lock) when pages of `tenant` return to the pool.
  std::function<void(TenantId tenant, uint64_t pages, uint64_t page_bytes)> on_pages_freed;
};

struct PoolTenantStats {
  TenantId tenant = kNoTenant;
  uint32_t chunks = 0;
  uint64_t pages = 0;
};

struct PagePoolStats {
  uint64_t capacity_pages = 0;
  uint64_t used_pages = 0;    // not in any free list (owned or pinned after release)
  uint64_t shared_pages = 0;  // refcount > 1
  uint64_t pinned_pages = 0;
  uint64_t orphan_pinned_pages = 0;  // released by every owner, waiting for an unpin
  uint32_t chunks_total = 0;
  uint32_t chunks_unowned = 0;
  uint32_t chunks_bound = 0;  // kept for the tenant they were shared with (see ShareTenantChunks)
  std::vector<PoolTenantStats> tenants;  // tenants owning at least one chunk
};

class PagePool {
 public:
  static absl::StatusOr<std::unique_ptr<PagePool>> Create(PagePoolOptions options);
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  const std::string& name() const { return options_.name; }
  // Draining: no new sequences here (the control service refuses them); thread-safe.
  bool draining() const { return draining_.load(std::memory_order_relaxed); }
  void set_draining(bool on) { draining_.store(on, std::memory_order_relaxed); }
  std::string device() const { return options_.device->name(); }
  PoolDevice& device_ops() const { return *options_.device; }
  const KvLayout& layout() const { return options_.layout; }
  size_t page_bytes() const { return page_bytes_; }
  uint32_t chunk_pages() const { return options_.chunk_pages; }
  uint64_t capacity_pages() const {
    return uint64_t{options_.chunk_pages} * options_.num_chunks;
  }
  uint32_t high_water_percent() const { return options_.high_water_percent; }
  uint64_t high_water_pages() const { return capacity_pages() * options_.high_water_percent / 100; }
  // Pages not on a free list right now.
  uint64_t used_pages() const;

  // Appends `n` fresh pages (refcount 1) of `tenant` to `out`, or changes nothing and
  // returns RESOURCE_EXHAUSTED when the pool cannot supply them.
  absl::Status Allocate(TenantId tenant, uint32_t n, std::vector<PageId>* out);
  // One more owner of each page (a fork sharing it).
  void Ref(absl::Span<const PageId> pages);
  // One owner fewer; pages left with no owner and no pin are freed. Returns how many
  // pages went back to the pool now.
  uint64_t Unref(absl::Span<const PageId> pages);
  void Pin(absl::Span<const PageId> pages);
  void Unpin(absl::Span<const PageId> pages);

  uint32_t RefCount(PageId page) const;
  // Pages of `pages` held by more than one sequence, under one lock (listings).
  uint32_t CountShared(absl::Span<const PageId> pages) const;
  TenantId OwnerOf(PageId page) const;
  // Stable while the page's chunk is owned (a renewal for a new tenant may move it).
  uint8_t* PageData(PageId page) const {
    return chunks_[page / options_.chunk_pages].memory->data() +
           size_t{page % options_.chunk_pages} * page_bytes_;
  }

  // Where a page lives: its chunk and byte offset in it.
  uint32_t ChunkOf(PageId page) const { return page / options_.chunk_pages; }
  uint64_t OffsetInChunk(PageId page) const {
    return uint64_t{page % options_.chunk_pages} * page_bytes_;
  }
  size_t chunk_bytes() const { return size_t{options_.chunk_pages} * page_bytes_; }
  uint32_t num_chunks() const { return options_.num_chunks; }
  // Stable while the chunk is owned. With `packed_rkey`, the allocator's UCX key (or null).
  uint8_t* ChunkData(uint32_t chunk) const { return chunks_[chunk].memory->data(); }
  const std::string* ChunkRkey(uint32_t chunk) const { return chunks_[chunk].memory->packed_rkey(); }

  // A chunk as it may be shared with `tenant`: its generation grows every time the
  // chunk's memory is renewed for a new owner, so a worker can tell a stale handle.
  struct ChunkShare {
    uint32_t chunk = 0;
    uint64_t generation = 0;
    int fd = -1;             // dup'd (caller closes); -1 when the device has none
    std::string ipc_handle;  // device chunks
  };
  // The chunks `tenant` owns now (ascending), except those in `known` at the same
  // generation. Each share carries a new fd for the chunk's memory (when it has one),
  // opened read-only when `read_only` (so a mapping of it cannot be made writable).
  // A chunk whose share Renew cannot revoke (ChunkMemory::RenewRevokesSharing) is bound
  // to `tenant` by it: no other tenant ever claims it.
  absl::StatusOr<std::vector<ChunkShare>> ShareTenantChunks(
      TenantId tenant, bool read_only, const absl::flat_hash_map<uint32_t, uint64_t>& known = {});
  // The chunk's generation and owner (kNoTenant when unowned).
  std::pair<uint64_t, TenantId> ChunkState(uint32_t chunk) const;

  PagePoolStats Stats() const;
  // Free lists, refcounts and chunk ownership agree; per-tenant page counts match.
  absl::Status CheckInvariants() const;

 private:
  std::atomic<bool> draining_{false};
  struct PageMeta {
    uint32_t refs = 0;
    uint32_t pins = 0;
  };
  struct Chunk {
    // The pointer is set once in Create; the memory behind it is renewed (under mu_)
    // only while the chunk is unowned.
    std::unique_ptr<ChunkMemory> memory;
    TenantId owner = kNoTenant;
    TenantId last_owner = kNoTenant;  // renew before handing to someone else
    uint64_t generation = 1;          // grows at every renewal
    // Shared with this tenant in a way Renew cannot revoke (a CUDA IPC handle): only it
    // may claim the chunk from now on.
    TenantId bound_to = kNoTenant;
    bool ClaimableBy(TenantId tenant) const { return bound_to == kNoTenant || bound_to == tenant; }
    std::vector<uint32_t> free_slots;  // in-chunk page indices
    int32_t open_index = -1;           // position in the owner's open_chunks, or -1
  };
  struct TenantChunks {
    std::vector<uint32_t> open_chunks;  // owned chunks with a free page
    uint32_t chunks = 0;
    uint64_t pages = 0;       // pages in use
    uint64_t free_pages = 0;  // free pages inside owned chunks (keeps Allocate O(n))
  };

  explicit PagePool(PagePoolOptions options);
  absl::StatusOr<uint32_t> ClaimChunkLocked(TenantId tenant) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Unowned chunks `tenant` may claim: all of them unless some are bound to others.
  uint64_t ClaimableChunksLocked(TenantId tenant) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives chunk c its memory from the factory.
  absl::Status MakeChunkLocked(uint32_t c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pages freed per tenant by one call; almost always one tenant, so no heap allocation.
  using FreedPages = absl::InlinedVector<std::pair<TenantId, uint64_t>, 2>;
  void FreePageLocked(PageId page, FreedPages* freed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReportFreed(const FreedPages& freed) const;
  static void RemoveOpen(TenantChunks& t, std::vector<Chunk>& chunks, uint32_t c);
  uint64_t FreePagesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const PagePoolOptions options_;
  const size_t page_bytes_;
  mutable absl::Mutex mu_;
  // The vector itself is sized once in Create; chunk fields other than `memory` are
  // guarded by mu_.
  std::vector<Chunk> chunks_;
  std::vector<PageMeta> pages_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> unowned_chunks_ ABSL_GUARDED_BY(mu_);
  uint32_t bound_chunks_ ABSL_GUARDED_BY(mu_) = 0;  // chunks with bound_to set
  uint64_t free_pages_ ABSL_GUARDED_BY(mu_) = 0;  // on any free list
  absl::flat_hash_map<TenantId, TenantChunks> tenants_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvwarden
