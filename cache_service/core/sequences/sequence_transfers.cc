// SequenceTable's transfer leases: pinning a sequence's pages for a worker's RMA or
// in-place read and unpinning them when the lease ends. The book of live leases is
// TransferLeases (transfer_leases.h); the table's lock guards it. See SequenceTable's
// header for what waits on a pin.

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/core/sequences/sequence.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "cache_service/core/sequences/transfer_busy.h"

namespace kvwarden {
namespace {

absl::Status CheckRange(const Sequence& seq, const TransferArgs& a)
    ABSL_SHARED_LOCKS_REQUIRED(seq.mu) {
  const KvLayout& l = seq.layout();
  if (a.layer_count == 0) return absl::InvalidArgumentError("layer_count: must be > 0");
  if (uint64_t{a.layer_start} + a.layer_count > l.num_layers) {
    return absl::OutOfRangeError(
        absl::StrFormat("layers [%u, %d) are outside the layout's %u layers", a.layer_start,
                        uint64_t{a.layer_start} + a.layer_count, l.num_layers));
  }
  if (a.slot_end <= a.slot_start) {
    return absl::InvalidArgumentError(
        absl::StrFormat("slot_end: %u must be > slot_start %u", a.slot_end, a.slot_start));
  }
  for (uint32_t layer = a.layer_start; layer < a.layer_start + a.layer_count; ++layer) {
    const uint32_t held = seq.LayerSlots(layer);
    if (a.slot_end > held) {
      return absl::OutOfRangeError(absl::StrFormat(
          "slots [%u, %u) of layer %u: sequence %d holds %u slots there (epoch %d); reserve first",
          a.slot_start, a.slot_end, layer, seq.id, held, seq.epoch));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TransferGrant> SequenceTable::BeginTransfer(const TransferArgs& args) {
  if (args.ttl < absl::ZeroDuration() || args.ttl > kMaxTransferTtl) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_ms: must be in [0, ", absl::ToInt64Milliseconds(kMaxTransferTtl), "]"));
  }
  const absl::Duration ttl = args.ttl == absl::ZeroDuration() ? kDefaultTransferTtl : args.ttl;
  absl::StatusOr<net::DataSecret> secret = NewDataSecret();
  if (!secret.ok()) return secret.status();
  // Table lock first (lease check and the record), then the sequence: the header's order.
  absl::MutexLock table_lock(&mu_);
  if (absl::Status s = options_.leases->CheckActive(args.lease, args.tenant); !s.ok()) return s;
  auto it = sequences_.find(args.sequence);
  if (it == sequences_.end() || it->second->tenant != args.tenant) {
    return absl::NotFoundError(absl::StrCat("sequence ", args.sequence, " not found"));
  }
  std::shared_ptr<Sequence> seq = it->second;
  if (absl::Status s = CheckTransferLimitLocked(args.tenant); !s.ok()) return s;
  absl::MutexLock seq_lock(&seq->mu);
  if (!seq->kv_lost.empty()) return absl::DataLossError(seq->kv_lost);
  if (args.mode == TransferMode::kWrite && seq->migrating) return MigratingError(seq->id);
  if (absl::Status s = CheckRange(*seq, args); !s.ok()) return s;
  PagePool& pool = *seq->pool;
  const uint32_t pt = seq->layout().page_tokens;
  TransferGrant grant;
  grant.epoch = seq->epoch;
  grant.pool = &pool;
  grant.first_page = args.slot_start / pt;
  grant.num_pages = (args.slot_end + pt - 1) / pt - grant.first_page;
  std::vector<PageId> pinned;
  pinned.reserve(size_t{args.layer_count} * grant.num_pages);
  for (uint32_t layer = args.layer_start; layer < args.layer_start + args.layer_count; ++layer) {
    std::vector<PageRun>& runs = grant.layers.emplace_back();
    for (uint32_t i = 0; i < grant.num_pages; ++i) {
      const PageId page = seq->pages[layer][grant.first_page + i];
      if (args.mode == TransferMode::kWrite && pool.RefCount(page) > 1) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "layer %u page %u (slots %u..%u) is shared read-only with a fork; it cannot be written",
            layer, grant.first_page + i, (grant.first_page + i) * pt,
            (grant.first_page + i + 1) * pt - 1));
      }
      AppendPageRun(pool, page, runs);
      pinned.push_back(page);
    }
  }
  for (const auto& runs : grant.layers) {
    for (const PageRun& r : runs) grant.chunks.emplace_back(r.chunk, 0);
  }
  std::sort(grant.chunks.begin(), grant.chunks.end());
  grant.chunks.erase(std::unique(grant.chunks.begin(), grant.chunks.end()), grant.chunks.end());
  for (auto& [chunk, generation] : grant.chunks) generation = pool.ChunkState(chunk).first;

  pool.Pin(pinned);
  ++seq->transfers;
  if (args.mode == TransferMode::kWrite) ++seq->write_transfers;
  const absl::Time now = Now();
  grant.id = transfers_.NewId();
  grant.expires = now + ttl;
  grant.secret = *secret;
  TransferLeases::Record t;
  t.secret = *secret;
  t.info = TransferInfo{grant.id,         args.tenant,     args.lease,       seq->id,
                        pool.name(),      args.mode,       args.layer_start, args.layer_count,
                        grant.first_page, grant.num_pages, pinned.size(),    now,
                        grant.expires};
  t.seq = std::move(seq);
  const size_t pinned_count = pinned.size();
  t.pinned = std::move(pinned);
  transfers_.Add(std::move(t));
  events().TransferBegun(args.mode == TransferMode::kWrite,
                         uint64_t{pinned_count} * pool.page_bytes());
  return grant;
}

absl::Status SequenceTable::CheckTransferLimitLocked(TenantId tenant) {
  const TenantLimits limits = options_.ledger->limits(tenant);
  if (transfers_.CountOf(tenant) < limits.max_transfers) return absl::OkStatus();
  options_.ledger->CountLimitRefusal(tenant);
  return TenantLimitReached(options_.ledger->spec(tenant), "max_transfers", limits.max_transfers,
                            "transfer leases");
}

absl::Status SequenceTable::FinishTransfer(TransferLeases::Record& t, TransferEnd how) {
  events().TransferEnded(how);
  const bool completed = how == TransferEnd::kCompleted;
  // Staging (if any) goes first, while the pages are still pinned.
  absl::Status s;
  if (options_.on_transfer_ended) s = options_.on_transfer_ended(t.info.id, completed);
  Sequence& seq = *t.seq;
  {
    absl::MutexLock lock(&seq.mu);
    seq.pool->Unpin(t.pinned);
    if (t.migration) seq.migrating = false;
    --seq.transfers;
    if (t.info.mode == TransferMode::kWrite) --seq.write_transfers;
  }
  // Outside the sequence's lock: parked calls retry on their own thread.
  if (options_.on_transfers_changed) options_.on_transfers_changed();
  return s;
}

absl::Status SequenceTable::EndTransfer(TransferId id, const Caller& caller) {
  absl::StatusOr<TransferLeases::Record> t;
  {
    absl::MutexLock lock(&mu_);
    t = transfers_.Take(id, caller);
  }
  if (!t.ok()) return t.status();
  return FinishTransfer(*t, TransferEnd::kCompleted);
}

size_t SequenceTable::EndTransfersWhere(
    const std::function<bool(const TransferLeases::Record&)>& pred, TransferEnd how) {
  std::vector<TransferLeases::Record> ended;
  {
    absl::MutexLock lock(&mu_);
    ended = transfers_.TakeWhere(pred);
  }
  for (TransferLeases::Record& t : ended) (void)FinishTransfer(t, how);
  return ended.size();
}

size_t SequenceTable::ExpireTransfers() {
  const absl::Time now = Now();
  return EndTransfersWhere([now](const TransferLeases::Record& t) { return t.info.expires <= now; },
                           TransferEnd::kExpired);
}

absl::Status SequenceTable::WithTransferPages(
    TransferId id, const net::DataSecret& secret, TransferMode mode, uint32_t layer,
    uint32_t first_page, uint32_t count,
    absl::FunctionRef<absl::Status(const TransferPages&)> fn) const {
  absl::ReaderMutexLock lock(&mu_);
  absl::StatusOr<const TransferLeases::Record*> found = transfers_.Find(id, secret);
  if (!found.ok()) return found.status();
  const TransferLeases::Record& t = **found;
  if (Now() >= t.info.expires) {
    return absl::AbortedError(
        absl::StrFormat("transfer lease %d expired at %s; begin a new transfer", id,
                        absl::FormatTime(t.info.expires)));
  }
  if (mode == TransferMode::kWrite && t.info.mode != TransferMode::kWrite) {
    return absl::FailedPreconditionError(
        absl::StrCat("transfer ", id, " was begun for reading; it cannot write"));
  }
  if (layer >= t.info.layer_count) {
    return absl::OutOfRangeError(absl::StrFormat(
        "layer index %u is outside transfer %d (%u layers)", layer, id, t.info.layer_count));
  }
  const auto [base, layer_pages] = t.LayerPages(layer);
  if (count == 0 || uint64_t{first_page} + count > layer_pages) {
    return absl::OutOfRangeError(
        absl::StrFormat("pages [%u, %d) of layer index %u are outside transfer %d (%u pages there)",
                        first_page, uint64_t{first_page} + count, layer, id, layer_pages));
  }
  PagePool& pool = *t.seq->pool;
  TransferPages pages{t.info.tenant, &pool, {}};
  const size_t at = base + first_page;
  for (size_t i = at; i < at + count; ++i) AppendPageRun(pool, t.pinned[i], pages.runs);
  return fn(pages);
}

std::vector<TransferInfo> SequenceTable::ListTransfers(std::optional<TenantId> tenant) const {
  absl::ReaderMutexLock lock(&mu_);
  return transfers_.List(tenant);
}

}  // namespace kvwarden
