#pragma once

// SequenceTable: every live sequence's page tables, slot positions and epoch.
//
// It charges the TenantLedger and allocates from the sequence's PagePool; a refused
// call changes nothing. Sequences are created and forked under a worker lease that is
// checked under the table lock, so a lease lapsing concurrently can never leave an
// orphan behind (the reaper's ReleaseByLease sees every sequence inserted before it).
//
// A caller only sees its own tenant's sequences: any other id answers NOT_FOUND with
// the same message as an id that never existed.
//
// Thread-safe. Lock order: table lock, then a sequence's lock, then ledger/pool/lease
// locks (those never call back into the table). Byte copies run under the sequence's
// shared lock only, so different sequences copy in parallel.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "cache_service/core/ids.h"
#include "cache_service/core/memory/page_pool.h"
#include "cache_service/core/sequences/retention_policy.h"
#include "cache_service/core/sequences/retention_strategy.h"
#include "cache_service/core/sequences/sequence.h"
#include "cache_service/core/sequences/sequence_image.h"
#include "cache_service/core/sequences/stats_batch.h"
#include "cache_service/core/sequences/table_events.h"
#include "cache_service/core/sequences/transfer_leases.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "cache_service/core/tenancy/worker_leases.h"
#include "common/net/data_frames.h"

namespace kvwarden {

struct CreateSequenceArgs {
  TenantId tenant = kNoTenant;
  LeaseId lease = 0;
  PagePool* pool = nullptr;
  uint32_t max_tokens = 0;
  RetentionPolicy policy;
};

struct Reservation {
  uint32_t first_position = 0;
  uint32_t num_tokens = 0;
  uint32_t first_slot = 0;
  uint32_t first_page_offset = 0;
  std::vector<std::vector<PageId>> layer_pages;  // pages covering head 0's new slots
  uint64_t epoch = 0;
  std::vector<uint32_t> first_slots;   // per (layer, head), only when heads differ
  std::vector<HeadRetention> evicted;  // what making room dropped (streaming)
};

struct ForkResult {
  SequenceId id = 0;
  uint32_t shared_pages = 0;
  uint32_t copied_pages = 0;
};

// A validated ReadKV request: layers [layer_start, layer_start + layer_count), tokens
// [token_start, token_end) at `epoch`.
struct ReadPlan {
  uint64_t epoch = 0;
  uint32_t layer_start = 0, layer_count = 0;
  uint32_t token_start = 0, token_end = 0;
  KvLayout layout;
};

// Bytes of one layer over a token range, packed head after head.
struct KvSlice {
  uint64_t epoch = 0;
  std::vector<uint32_t> head_live_counts;
  std::vector<uint32_t> positions;  // empty when every head holds the whole range
  std::string k;
  std::string v;
};

struct HeadInfo {
  uint32_t live_slots = 0;
  uint32_t budget = 0;
  uint32_t evicted = 0;
  std::vector<HeadFigure> figures;  // the policy's, named by it (RetentionState::Describe)
};

struct SequenceInfo {
  SequenceId id = 0;
  TenantId tenant = kNoTenant;
  std::string pool;
  LeaseId lease = 0;
  KvLayout layout;
  uint64_t epoch = 0;
  uint32_t num_tokens = 0;
  uint32_t max_tokens = 0;
  std::string policy;
  std::string policy_summary;
  std::string pressure_note;  // why budgets are tighter than the policy's, if they are
  uint64_t decode_steps = 0;
  uint32_t pages_held = 0;
  uint32_t shared_pages = 0;
  SequenceId parent = 0;
  std::vector<uint32_t> layer_num_pages;
  std::vector<std::vector<PageId>> layer_pages;  // only when asked for
  std::vector<HeadInfo> heads;                   // [layer * num_kv_heads + head]; when asked
};

class SequenceTable {
 public:
  struct Options {
    TenantLedger* ledger = nullptr;  // required
    WorkerLeases* leases = nullptr;  // required
    // Called (outside every lock of the table, the pages still pinned) whenever a
    // transfer lease ends: `completed` by EndTransfer, not by expiry, its worker's lease
    // lapsing or the table going away. An error is EndTransfer's answer.
    std::function<absl::Status(TransferId, bool completed)> on_transfer_ended;
    // Called (outside every lock of the table) after a transfer lease's pins are gone:
    // operations answered TransferBusyError may succeed now.
    std::function<void()> on_transfers_changed;
    // Told of compressions, statistics, pressure and sequence ends (metrics); must
    // outlive the table. Null: nothing is reported.
    TableEvents* events = nullptr;
    // Called (outside the table's lock) when a sequence ends, with its id and how:
    // cluster mode's handles go with it.
    std::function<void(SequenceId, SequenceEnd)> on_sequence_ended;
  };

  explicit SequenceTable(Options options);
  ~SequenceTable();
  SequenceTable(const SequenceTable&) = delete;
  SequenceTable& operator=(const SequenceTable&) = delete;

  absl::StatusOr<SequenceId> Create(const CreateSequenceArgs& args);
  absl::StatusOr<ForkResult> Fork(SequenceId parent, TenantId tenant, LeaseId lease);
  // Returns the number of pages that went back to the pool.
  absl::StatusOr<uint64_t> Release(SequenceId id, TenantId tenant);
  // Streaming sequences first drop their oldest non-sink slots to make room (epoch + 1).
  absl::StatusOr<Reservation> Reserve(SequenceId id, TenantId tenant, uint32_t num_tokens);

  // Applies attention statistics: Scissorhands decode steps (record, then evict and
  // compact heads over budget, remapping the batch's later steps) or WindowKV window
  // scores (select and compact each group). The whole batch is validated before any of
  // it is applied; the epoch grows once per step that changed retention.
  absl::StatusOr<RetentionResult> ApplyStats(SequenceId id, TenantId tenant, StatsBatch batch);

  // k and v: [head][token][head_dim] for positions [token_start, token_start + n).
  absl::Status WriteKV(SequenceId id, TenantId tenant, uint32_t layer, uint32_t token_start,
                       uint32_t num_tokens, absl::string_view k, absl::string_view v);
  // Checks a read of layers [layer_start, +layer_count) and tokens [token_start,
  // token_end) (token_end 0: every reserved token) at `epoch` (unset: the current one);
  // the one place ReadKV requests are validated.
  absl::StatusOr<ReadPlan> PlanRead(SequenceId id, const Caller& caller, uint32_t layer_start,
                                    uint32_t layer_count, uint32_t token_start, uint32_t token_end,
                                    std::optional<uint64_t> epoch) const;
  // Live slots of `layer` with positions in [token_start, token_end), validated as by
  // PlanRead: FAILED_PRECONDITION when `expected_epoch` is set and differs (a read
  // spanning messages sees one epoch).
  absl::StatusOr<KvSlice> ReadKV(SequenceId id, const Caller& caller, uint32_t layer,
                                 uint32_t token_start, uint32_t token_end,
                                 std::optional<uint64_t> expected_epoch) const;

  absl::StatusOr<SequenceInfo> Describe(SequenceId id, const Caller& caller, bool include_pages,
                                        bool include_heads) const;
  // Sequences `tenant` holds (what TenantLimits.max_sequences counts).
  uint32_t TenantSequences(TenantId tenant) const;
  // Summaries (no per-layer detail), ordered by id: at most `limit` with ids above
  // `after`. `*more_after` (when given) is set to the last id looked at when more may
  // follow, else 0.
  std::vector<SequenceInfo> List(std::optional<TenantId> tenant, const std::string& pool,
                                 SequenceId after = 0, size_t limit = SIZE_MAX,
                                 SequenceId* more_after = nullptr) const;

  // Memory pressure on `pool`: tightens the budgets of compressible sequences (tenant
  // weight ascending, largest first; never `exclude`) by a quarter and compresses them
  // now, until `pages_wanted` pages came back or none is left to squeeze. Sequences busy
  // in another call are skipped. Returns the pages freed.
  uint64_t RelievePressure(PagePool* pool, uint64_t pages_wanted, SequenceId exclude);

  // Releases every sequence held by `lease` and ends its transfers; returns how many
  // sequences.
  size_t ReleaseByLease(LeaseId lease);

  // Transfer leases (see sequence_transfers.cc). While one holds a sequence's pages,
  // compaction of that sequence (statistics, streaming make-room) and a fork while one
  // writes answer TransferBusyError (nothing waits here), memory pressure passes it by, and a
  // release leaves the pinned pages (and their bytes) in place until it ends. Writing needs pages
  // no fork shares.
  absl::StatusOr<TransferGrant> BeginTransfer(const TransferArgs& args);
  // NOT_FOUND for an unknown id or another tenant's transfer (admin may end any).
  absl::Status EndTransfer(TransferId id, const Caller& caller);
  // Ends transfers past their expiry; returns how many.
  size_t ExpireTransfers();
  // The served data path: checks that transfer `id` exists with `secret` (NOT_FOUND
  // otherwise, the same for both), has not expired (ABORTED), was begun for writing when
  // `mode` writes (FAILED_PRECONDITION), and holds pages [first_page, first_page + count)
  // of its layer index `layer` (OUT_OF_RANGE); then runs `fn` on those pages while they
  // stay pinned. `fn` runs under the table's reader lock: keep it to a bounded copy.
  absl::Status WithTransferPages(TransferId id, const net::DataSecret& secret, TransferMode mode,
                                 uint32_t layer, uint32_t first_page, uint32_t count,
                                 absl::FunctionRef<absl::Status(const TransferPages&)> fn) const;
  std::vector<TransferInfo> ListTransfers(std::optional<TenantId> tenant) const;

  // Migration, source side (sequence_migration.cc). Pins every page of the sequence
  // under a read transfer lease of `ttl` (at most kMaxTransferTtl) held by the
  // sequence's own worker lease, stops its writes (reservations wait, writes are
  // refused) and describes it with a checksum per page. NOT_FOUND for a sequence the
  // caller cannot see; FAILED_PRECONDITION while another migration or a write transfer
  // holds it.
  absl::StatusOr<MigrationStart> BeginMigration(SequenceId id, const Caller& caller,
                                                absl::Duration ttl);
  // Ends the migration's lease. `adopted`: the target holds the sequence now, so it is
  // released here (ended as migrated); otherwise it takes writes again, unchanged. An
  // error says the lease had already ended (expiry, its worker's lease lapsing).
  absl::Status EndMigration(TransferId transfer, SequenceId id, bool adopted);

  // Migration, target side: a sequence made from `image` for `tenant` under `lease` in
  // `pool` with `policy` (the image's, validated for the pool). Pages are allocated and
  // charged, then `fill` writes each layer's pages' bytes, then every page is checked
  // against the image's checksum; only then is the sequence inserted. Any failure frees
  // what was allocated and inserts nothing: DATA_LOSS for a page whose checksum does not
  // hold, INVALID_ARGUMENT for an image that does not describe a sequence of the pool.
  struct AdoptArgs {
    TenantId tenant = kNoTenant;
    LeaseId lease = 0;
    PagePool* pool = nullptr;
    RetentionPolicy policy;
    const SequenceImage* image = nullptr;
  };
  using PageFill = absl::FunctionRef<absl::Status(uint32_t layer, absl::Span<const PageId> pages)>;
  absl::StatusOr<SequenceId> Adopt(const AdoptArgs& args, PageFill fill);

  // Pool refcounts equal references from sequences, page owners match, ledger usage
  // equals pool usage. Call when no other thread mutates (tests, debug endpoints).
  absl::Status CheckInvariants(absl::Span<PagePool* const> pools) const;

  const TenantLedger& ledger() const { return *options_.ledger; }
  // Where the table reports what happens (Options::events, or nowhere).
  TableEvents& events() const { return options_.events ? *options_.events : NoTableEvents(); }

 private:
  // The one time source of the table (the worker leases' clock): creation, activity,
  // transfer expiry and compression times all read it, so tests drive time.
  absl::Time Now() const { return options_.leases->clock()->Now(); }
  absl::StatusOr<std::shared_ptr<Sequence>> Find(SequenceId id, const Caller& caller) const;
  absl::Status Insert(std::shared_ptr<Sequence> seq);
  uint64_t ReleaseLocked(Sequence& seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu);
  // Tells events() that `seq` ended now.
  void ReportEnd(const Sequence& seq, SequenceEnd why);
  // Tells events() of a compression of `seq` that started at `started`, if it dropped any.
  void ReportCompression(const Sequence& seq, RetentionCause cause,
                         absl::Span<const HeadRetention> changes, absl::Time started)
      ABSL_SHARED_LOCKS_REQUIRED(seq.mu);

  static absl::Status CheckReadLocked(const Sequence& seq, uint32_t layer_start,
                                      uint32_t layer_count, uint32_t token_start,
                                      uint32_t token_end, std::optional<uint64_t> epoch)
      ABSL_SHARED_LOCKS_REQUIRED(seq.mu);
  // Unpins and tells on_transfers_changed; the record is already out of transfers_.
  // RESOURCE_EXHAUSTED (counted) once `tenant` holds TenantLimits::max_transfers leases.
  absl::Status CheckTransferLimitLocked(TenantId tenant) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FinishTransfer(TransferLeases::Record& t, TransferEnd how);
  size_t EndTransfersWhere(const std::function<bool(const TransferLeases::Record&)>& pred,
                           TransferEnd how);

  const Options options_;
  mutable absl::Mutex mu_;
  TransferLeases transfers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<SequenceId, std::shared_ptr<Sequence>> sequences_ ABSL_GUARDED_BY(mu_);
  // Per tenant, for TenantLimits::max_sequences: sequences in sequences_.
  absl::flat_hash_map<TenantId, uint32_t> tenant_sequences_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvwarden
