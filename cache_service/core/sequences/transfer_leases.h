#pragma once

// Transfer leases: pins on whole pages of a sequence while a worker moves them by RMA
// (UCX), through the daemon's TCP data path, or reads them in place. This header holds
// their vocabulary and TransferLeases, the book of the live ones. SequenceTable
// (sequence_transfers.cc) pins and unpins the pages and holds its lock around every
// call into the book.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cache_service/core/ids.h"
#include "cache_service/core/memory/page_pool.h"
#include "common/net/data_frames.h"

namespace kvwarden {

struct Sequence;

using TransferId = uint64_t;
enum class TransferMode { kRead, kWrite };

// A transfer lease: pins whole pages of layers [layer_start, layer_start + layer_count)
// covering slots [slot_start, slot_end) (widened to page boundaries) until it ends.
struct TransferArgs {
  TenantId tenant = kNoTenant;
  LeaseId lease = 0;  // the worker's lease; the transfer ends with it
  SequenceId sequence = 0;
  uint32_t layer_start = 0;
  uint32_t layer_count = 0;
  uint32_t slot_start = 0;
  uint32_t slot_end = 0;
  TransferMode mode = TransferMode::kRead;
  absl::Duration ttl = absl::ZeroDuration();  // zero: kDefaultTransferTtl
};
inline constexpr absl::Duration kDefaultTransferTtl = absl::Seconds(10);
inline constexpr absl::Duration kMaxTransferTtl = absl::Minutes(1);

// Consecutive pages of one layer that are also consecutive in one chunk: one RMA.
struct PageRun {
  uint32_t chunk = 0;
  uint64_t offset = 0;  // bytes from the chunk's start
  uint32_t pages = 0;
};

// Adds `page` of `pool` to `runs`: it lengthens the last run when it follows it in the
// same chunk, else it starts one.
void AppendPageRun(const PagePool& pool, PageId page, std::vector<PageRun>& runs);

// 16 random bytes from getrandom(): a transfer's data-path secret.
absl::StatusOr<net::DataSecret> NewDataSecret();

struct TransferGrant {
  TransferId id = 0;
  uint64_t epoch = 0;
  PagePool* pool = nullptr;
  uint32_t first_page = 0;                            // page index in each layer's table
  uint32_t num_pages = 0;                             // per layer
  std::vector<std::vector<PageRun>> layers;           // [layer - layer_start]
  std::vector<std::pair<uint32_t, uint64_t>> chunks;  // (chunk, generation) named, ascending
  absl::Time expires;
  // Proves the grant on the daemon-served data path (TcpDataServer): random, known only
  // to the daemon and the caller of BeginTransfer.
  net::DataSecret secret{};
};

// Pages of one layer of a transfer, as the served data path copies them.
struct TransferPages {
  TenantId tenant = kNoTenant;
  PagePool* pool = nullptr;
  std::vector<PageRun> runs;  // in page order
};

struct TransferInfo {
  TransferId id = 0;
  TenantId tenant = kNoTenant;
  LeaseId lease = 0;
  SequenceId sequence = 0;
  std::string pool;
  TransferMode mode = TransferMode::kRead;
  uint32_t layer_start = 0, layer_count = 0, first_page = 0, num_pages = 0;
  uint64_t pinned_pages = 0;
  absl::Time started;
  absl::Time expires;
};

// The live transfer leases: their records, ids and per-tenant counts (for
// TenantLimits::max_transfers). Not synchronized: its owner's lock guards every call.
class TransferLeases {
 public:
  struct Record {
    TransferInfo info;
    net::DataSecret secret{};
    std::shared_ptr<Sequence> seq;  // the pinned pages' sequence, alive while pinned
    std::vector<PageId> pinned;     // [layer - layer_start][page - first_page]
    // A migration's lease pins whole page tables, whose lengths differ per layer: the
    // pages of layer index i are pinned[layer_offsets[i], layer_offsets[i + 1]). Empty:
    // num_pages per layer.
    std::vector<size_t> layer_offsets;
    bool migration = false;  // its end lets the sequence take writes again

    // Pinned pages of layer index `layer` (< info.layer_count): where they start in
    // `pinned` and how many.
    std::pair<size_t, uint32_t> LayerPages(uint32_t layer) const {
      if (layer_offsets.empty()) return {size_t{layer} * info.num_pages, info.num_pages};
      return {layer_offsets[layer],
              static_cast<uint32_t>(layer_offsets[layer + 1] - layer_offsets[layer])};
    }
  };

  uint32_t CountOf(TenantId tenant) const;
  // A random id (util/random_id.h) no live lease has.
  TransferId NewId() const;
  void Add(Record record);
  // Removes and returns the lease `id` if `caller` may see it; NOT_FOUND otherwise, with
  // the same message for another tenant's id as for one that never existed.
  absl::StatusOr<Record> Take(TransferId id, const Caller& caller);
  // Removes and returns every lease `pred` holds for.
  std::vector<Record> TakeWhere(const std::function<bool(const Record&)>& pred);
  // The lease `id` proved by `secret`, or NOT_FOUND (one message for both: the data path
  // does not tell a guessed id from a wrong secret).
  absl::StatusOr<const Record*> Find(TransferId id, const net::DataSecret& secret) const;
  // Infos of every lease (of `tenant` only, if given), by id.
  std::vector<TransferInfo> List(std::optional<TenantId> tenant) const;

 private:
  absl::flat_hash_map<TransferId, Record> records_;
  absl::flat_hash_map<TenantId, uint32_t> per_tenant_;
};

}  // namespace kvwarden
