#pragma once
// The data plane of kvwarden's client library: move a sequence's pages with UCX RMA
// (DataPlane) or read them in place from the daemon's chunks on the same host
// (AttachedPool). Both hold a transfer lease while they touch pages, so the daemon never
// compacts, squeezes or frees those pages under them.
//
// Buffers use the pool's page layout: [layer][page][K|V][head][slot][head_dim], i.e. the
// pages of each layer of the range back to back. PageView addresses a slot in it.
//
// No UCX, gRPC or protobuf types appear here. Errors are absl::Status with gRPC codes:
// the daemon's own (NOT_FOUND, OUT_OF_RANGE, FAILED_PRECONDITION, ...), UNAVAILABLE when
// the daemon or the endpoint went away and the operation could not be retried, ABORTED
// when a transfer lease expired before the transfer finished.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kernels/page_view.h"
#include "kvwarden/client.h"

namespace kvwarden {
namespace client {

// The daemon's page geometry (kernels/page_view.h): one definition of the byte layout.
inline kernels::PageGeometry Geometry(const Layout& l) {
  return {l.num_kv_heads, l.head_dim, l.page_tokens, l.elem_bytes};
}
inline size_t PageBytes(const Layout& l) { return Geometry(l).page_bytes(); }
// Pages per layer that `range` covers.
inline uint32_t RangePages(const PageRange& r, const Layout& l) {
  if (r.slot_end <= r.slot_start || l.page_tokens == 0) return 0;
  return (r.slot_end + l.page_tokens - 1) / l.page_tokens - r.slot_start / l.page_tokens;
}
// Bytes of a buffer holding `range`.
inline size_t RangeBytes(const PageRange& r, const Layout& l) {
  return size_t{r.layer_count} * RangePages(r, l) * PageBytes(l);
}

// K/V of one layer's pages in the page layout. `pages[i]` is the page holding slots
// [(first_page + i) * page_tokens, ...).
class PageView {
 public:
  PageView(const Layout& layout, std::vector<uint8_t*> pages, uint32_t first_page)
      : geometry_(Geometry(layout)), pages_(std::move(pages)), first_page_(first_page) {}
  // A contiguous buffer of `num_pages` pages (one layer of a RangeBytes buffer).
  static PageView Contiguous(const Layout& layout, uint8_t* base, uint32_t first_page,
                             uint32_t num_pages) {
    std::vector<uint8_t*> pages(num_pages);
    for (uint32_t i = 0; i < num_pages; ++i) pages[i] = base + i * PageBytes(layout);
    return PageView(layout, std::move(pages), first_page);
  }
  // `slot` counts from the sequence's first slot (not the view's).
  uint8_t* k(uint32_t head, uint32_t slot) const {
    return Page(slot) + geometry_.k_offset(head, slot % geometry_.page_tokens);
  }
  uint8_t* v(uint32_t head, uint32_t slot) const {
    return Page(slot) + geometry_.v_offset(head, slot % geometry_.page_tokens);
  }
  size_t num_pages() const { return pages_.size(); }

 private:
  uint8_t* Page(uint32_t slot) const { return pages_[slot / geometry_.page_tokens - first_page_]; }
  kernels::PageGeometry geometry_;
  std::vector<uint8_t*> pages_;
  uint32_t first_page_;
};

struct DataPlaneOptions {
  std::string pool = "main";
  // UCX_TLS for this client: "shm" (same host), "tcp", "" = UCX_TLS from the environment
  // or UCX's default. Shared-memory transports run without peer error handling (UCX
  // rules); daemon restarts are still detected through the control plane.
  std::string transports;
  uint32_t transfer_ttl_ms = 0;  // 0 = the daemon's default (10 s)
  absl::Duration op_timeout = absl::Seconds(30);
  int max_attempts = 3;  // per idempotent request, across reconnects
};

// One request of a batch (DataPlane::Submit).
struct TransferRequest {
  PageRange range;
  TransferMode mode = TransferMode::kRead;
  uint8_t* buffer = nullptr;  // RangeBytes(range) bytes; only read from for writes
  // Idempotent requests are re-issued after an endpoint error or a daemon that answered
  // UNAVAILABLE; others then fail with UNAVAILABLE. Reads and writes of whole pages are
  // idempotent unless the caller's protocol says otherwise.
  bool idempotent = true;
  // Results.
  absl::Status status;
  uint64_t epoch = 0;
};

// Thread-safe: operations serialize on the DataPlane's one UCX worker (use one
// DataPlane per thread for parallel transfers). Must outlive its Transfers.
class DataPlane {
 public:
  // Resolves the daemon's UCX worker (GetDataPlane) and connects an endpoint. `client`
  // must outlive the DataPlane. Transfers are leased under `lease_id`.
  static absl::StatusOr<std::unique_ptr<DataPlane>> Connect(Client* client, uint64_t lease_id,
                                                            const DataPlaneOptions& options);
  ~DataPlane();
  DataPlane(const DataPlane&) = delete;
  DataPlane& operator=(const DataPlane&) = delete;

  // Whole-range convenience: lease, RMA, remote completion, end of lease.
  // Over shared memory an RMA is a memcpy into (or from) the caller's buffer: give
  // 64-byte-aligned (ideally page-aligned) buffers — glibc copies into malloc's
  // 16-byte-offset large blocks about a third slower (bench_dataplane).
  absl::Status Put(const PageRange& range, absl::Span<const uint8_t> src);
  // Returns the epoch the bytes belong to.
  absl::StatusOr<uint64_t> Get(const PageRange& range, absl::Span<uint8_t> dst);
  // Every request's lease first, then all their RMAs in flight together (one per run of
  // pages contiguous in a chunk), one flush, then the leases end. Each request gets its
  // own status.
  void Submit(absl::Span<TransferRequest> requests);

  // A lease held across many RMA operations: the way to stream pages at full speed.
  class Transfer {
   public:
    ~Transfer();          // ends the lease (errors are dropped; call End to see them)
    uint64_t id() const;  // the daemon's transfer id (kvwctl transfers)
    uint64_t epoch() const;
    uint32_t num_pages() const;  // per layer
    uint32_t first_page() const;
    // Pages [page, page + count) (counted from the range's first page) of the range's
    // `layer`-th layer, to or from `buf` (count * page_bytes). Returns once `buf` may be
    // reused; Flush (or End) makes writes visible at the daemon. ABORTED once the lease
    // has expired (the pages are no longer pinned).
    absl::Time expires() const;
    absl::Status WritePages(uint32_t layer, uint32_t page, uint32_t count, const uint8_t* buf);
    absl::Status ReadPages(uint32_t layer, uint32_t page, uint32_t count, uint8_t* buf);
    absl::Status Flush();
    absl::Status End();

   private:
    friend class DataPlane;
    struct State;
    explicit Transfer(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
  };
  absl::StatusOr<std::unique_ptr<Transfer>> Begin(const PageRange& range, TransferMode mode);

  const Layout& layout() const;
  size_t page_bytes() const;
  // The lease new transfers are taken under (e.g. after re-registering).
  void SetLease(uint64_t lease_id);
  // Endpoints rebuilt because the daemon restarted or the endpoint failed.
  uint64_t reconnects() const;
  // The transports and lanes UCX chose for the daemon endpoint (for logs and benches).
  std::string DescribeEndpoint() const;

 private:
  struct Impl;
  explicit DataPlane(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct AttachOptions {
  std::string pool = "main";
  absl::Duration timeout = absl::Seconds(10);
};

// Same host: the tenant's chunks mapped into this process (read-only for a decode
// worker, read-write for prefill/both), refreshed as the tenant gains chunks. CPU pools
// map the chunks' fds; GPU pools open their CUDA IPC handles (the library must be built
// with CUDA), and page pointers are then device pointers (read-write: CUDA IPC has no
// read-only mapping). Must outlive its Mappings. Thread-safe.
class AttachedPool {
 public:
  static absl::StatusOr<std::unique_ptr<AttachedPool>> Attach(Client* client, uint64_t lease_id,
                                                              const AttachOptions& options);
  ~AttachedPool();  // unmaps every chunk and closes the socket
  AttachedPool(const AttachedPool&) = delete;
  AttachedPool& operator=(const AttachedPool&) = delete;

  // A transfer lease whose pages are addressed in place. Ends on destruction.
  class Mapping {
   public:
    ~Mapping();
    uint64_t id() const;
    uint64_t epoch() const;
    uint32_t num_pages() const;  // per layer
    uint32_t first_page() const;
    // Valid until expires(): past it the pages are no longer pinned.
    absl::Time expires() const;
    const uint8_t* page(uint32_t layer, uint32_t page_index) const;
    // Null unless mapped with kWrite on a writable attachment.
    uint8_t* mutable_page(uint32_t layer, uint32_t page_index) const;
    PageView view(uint32_t layer) const;
    // Ends the lease. A writable mapping of device (cuda) pages first waits for the
    // device (cudaDeviceSynchronize), so kernels still writing them land before the
    // daemon may compact or read them; a read-only attach of a cuda pool is refused
    // (CUDA IPC mappings cannot be read-only).
    absl::Status End();

   private:
    friend class AttachedPool;
    struct State;
    explicit Mapping(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
  };
  absl::StatusOr<std::unique_ptr<Mapping>> Map(const PageRange& range,
                                               TransferMode mode = TransferMode::kRead);

  bool writable() const;
  bool on_device() const;  // page pointers are CUDA device pointers
  const Layout& layout() const;
  uint64_t attachment_id() const;
  size_t mapped_chunks() const;

 private:
  struct Impl;
  explicit AttachedPool(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace client
}  // namespace kvwarden
