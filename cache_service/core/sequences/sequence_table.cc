#include "cache_service/core/sequences/sequence_table.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/core/sequences/retention_strategy.h"
#include "cache_service/core/sequences/sequence.h"
#include "cache_service/core/sequences/transfer_busy.h"
#include "cache_service/util/random_id.h"
#include "kernels/copy_kv.h"

namespace kvwarden {
namespace {

uint32_t CeilDiv(uint64_t a, uint32_t b) { return static_cast<uint32_t>((a + b - 1) / b); }

absl::Status NotFound(SequenceId id) {
  return absl::NotFoundError(absl::StrCat("sequence ", id, " not found"));
}

// Page pointers and per-head slot ranges for one layer, restricted to the pages that
// the ranges touch so a small copy costs nothing per page of a long sequence.
struct LayerCopyPlan {
  std::vector<uint8_t*> page_ptrs;
  std::vector<uint32_t> begin;
  std::vector<uint32_t> count;
};

LayerCopyPlan PlanCopy(const Sequence& seq, uint32_t layer, absl::Span<const uint32_t> begin,
                       absl::Span<const uint32_t> count) ABSL_SHARED_LOCKS_REQUIRED(seq.mu) {
  const uint32_t pt = seq.layout().page_tokens;
  uint32_t lo = UINT32_MAX, hi = 0;
  for (size_t h = 0; h < begin.size(); ++h) {
    if (count[h] == 0) continue;
    lo = std::min(lo, begin[h] / pt);
    hi = std::max(hi, (begin[h] + count[h] - 1) / pt + 1);
  }
  LayerCopyPlan plan;
  if (lo == UINT32_MAX) lo = hi = 0;
  for (uint32_t p = lo; p < hi; ++p)
    plan.page_ptrs.push_back(seq.pool->PageData(seq.pages[layer][p]));
  for (size_t h = 0; h < begin.size(); ++h) {
    plan.begin.push_back(count[h] == 0 ? 0 : begin[h] - lo * pt);
    plan.count.push_back(count[h]);
  }
  return plan;
}

}  // namespace

SequenceTable::SequenceTable(Options options) : options_(options) {}

SequenceTable::~SequenceTable() {
  // Give every page back so the pools' free callbacks leave the ledger balanced.
  EndTransfersWhere([](const TransferLeases::Record&) { return true; }, TransferEnd::kLeaseEnded);
  absl::MutexLock lock(&mu_);
  for (auto& [id, seq] : sequences_) {
    absl::MutexLock seq_lock(&seq->mu);
    ReleaseLocked(*seq);
  }
}

absl::StatusOr<std::shared_ptr<Sequence>> SequenceTable::Find(SequenceId id,
                                                              const Caller& caller) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = sequences_.find(id);
  if (it == sequences_.end() || !caller.CanSee(it->second->tenant)) return NotFound(id);
  return it->second;
}

absl::Status SequenceTable::Insert(std::shared_ptr<Sequence> seq) {
  absl::MutexLock lock(&mu_);
  // Checked under the table lock: see the header on lease races.
  if (absl::Status s = options_.leases->CheckActive(seq->lease, seq->tenant); !s.ok()) return s;
  const TenantLimits limits = options_.ledger->limits(seq->tenant);
  uint32_t& held = tenant_sequences_[seq->tenant];
  if (held >= limits.max_sequences) {
    options_.ledger->CountLimitRefusal(seq->tenant);
    return TenantLimitReached(options_.ledger->spec(seq->tenant), "max_sequences",
                              limits.max_sequences, "sequences");
  }
  ++held;
  do {
    seq->id = RandomId();
  } while (sequences_.contains(seq->id));
  sequences_.emplace(seq->id, std::move(seq));
  return absl::OkStatus();
}

absl::StatusOr<SequenceId> SequenceTable::Create(const CreateSequenceArgs& args) {
  if (args.max_tokens == 0) {
    return absl::InvalidArgumentError("max_tokens: must be > 0");
  }
  auto seq = std::make_shared<Sequence>();
  seq->tenant = args.tenant;
  seq->lease = args.lease;
  seq->pool = args.pool;
  seq->max_tokens = args.max_tokens;
  seq->policy = args.policy;
  seq->created = Now();
  seq->Touch(Now());
  {
    absl::MutexLock lock(&seq->mu);
    const KvLayout& l = args.pool->layout();
    seq->pages.resize(l.num_layers);
    seq->slots.resize(size_t{l.num_layers} * l.num_kv_heads);
    seq->evicted.assign(seq->slots.size(), 0);
    absl::StatusOr<std::unique_ptr<RetentionState>> state =
        seq->policy.Strategy().NewState(seq->policy, seq->slots.size(), args.pool->device_ops());
    if (!state.ok()) return state.status();
    seq->retention = *std::move(state);
  }
  Sequence* raw = seq.get();
  if (absl::Status s = Insert(std::move(seq)); !s.ok()) return s;
  return raw->id;
}

absl::StatusOr<Reservation> SequenceTable::Reserve(SequenceId id, TenantId tenant,
                                                   uint32_t num_tokens) {
  if (num_tokens == 0) return absl::InvalidArgumentError("num_tokens: must be > 0");
  absl::StatusOr<std::shared_ptr<Sequence>> found = Find(id, Caller::Tenant(tenant));
  if (!found.ok()) return found.status();
  Sequence& seq = **found;
  // max_tokens is immutable: a request past it is refused before it can squeeze anyone.
  if (num_tokens > seq.max_tokens) {
    return absl::OutOfRangeError(absl::StrFormat(
        "num_tokens: %u is above the sequence's max_tokens %u", num_tokens, seq.max_tokens));
  }
  {
    // Memory pressure is relieved before this sequence is locked (lock order: table,
    // then one sequence), from a conservative estimate of the pages this call needs,
    // and only for a reservation the tenant's quota could take: pressure tightens other
    // sequences' budgets, which a call bound to be refused must not do.
    PagePool& pool = *seq.pool;
    const KvLayout& l = pool.layout();
    const uint64_t estimate = uint64_t{l.num_layers} * (num_tokens / l.page_tokens + 1);
    const uint64_t used = pool.used_pages();
    if (pool.high_water_percent() < 100 && used + estimate > pool.high_water_pages() &&
        options_.ledger->CouldCharge(tenant, estimate, pool.page_bytes())) {
      RelievePressure(&pool, used + estimate - pool.high_water_pages(), id);
    }
  }
  absl::MutexLock lock(&seq.mu);
  if (seq.released) return NotFound(id);
  const RetentionStrategy& strategy = seq.policy.Strategy();
  // Making room may compact: never under a transfer's feet.
  if ((strategy.ReserveCompacts() && seq.TransfersBusy(/*writes_only=*/false)) || seq.migrating)
    return TransferBusyError(id);
  if (uint64_t{seq.num_tokens} + num_tokens > seq.max_tokens) {
    return absl::OutOfRangeError(absl::StrFormat(
        "num_tokens: sequence %d holds %u of max_tokens %u; %u more would exceed it", id,
        seq.num_tokens, seq.max_tokens, num_tokens));
  }
  if (absl::Status s = strategy.CheckReserve(seq, num_tokens); !s.ok()) return s;
  const KvLayout& l = seq.layout();
  const uint32_t pt = l.page_tokens;
  std::vector<uint32_t> new_pages(l.num_layers);
  uint64_t total = 0;
  if (seq.retention != nullptr) {
    // The policy state's room first: it is the one step here that can fail on the device.
    if (absl::Status s = seq.retention->Reserve(seq.FullestLayerSlots() + num_tokens); !s.ok())
      return s;
  }
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    const uint32_t live = strategy.KeptBefore(seq, seq.LayerSlots(layer), num_tokens);
    const uint32_t need = CeilDiv(uint64_t{live} + num_tokens, pt);
    const uint32_t have = std::min<uint32_t>(seq.pages[layer].size(), CeilDiv(live, pt));
    new_pages[layer] = need - have;
    total += new_pages[layer];
  }
  PagePool& pool = *seq.pool;
  if (absl::Status s = options_.ledger->Charge(tenant, total, pool.page_bytes()); !s.ok()) {
    return s;
  }
  std::vector<PageId> fresh;
  if (absl::Status s = pool.Allocate(tenant, static_cast<uint32_t>(total), &fresh); !s.ok()) {
    options_.ledger->Refund(tenant, total, pool.page_bytes());
    return s;
  }
  // Nothing can fail from here on.
  Reservation r;
  const absl::Time started = Now();
  strategy.MakeRoom(seq, num_tokens, &r.evicted);
  ReportCompression(seq, RetentionCause::kReserve, r.evicted, started);
  seq.reserved_at_ms.resize(seq.num_tokens + num_tokens, absl::ToUnixMillis(started));
  seq.Touch(Now());
  r.first_position = seq.num_tokens;
  r.num_tokens = num_tokens;
  r.first_slot = seq.slots[0].size();
  r.first_page_offset = r.first_slot % pt;
  r.epoch = seq.epoch;
  r.layer_pages.resize(l.num_layers);
  std::vector<uint32_t> first_slots;
  bool uneven = false;
  size_t next = 0;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    auto& table = seq.pages[layer];
    table.insert(table.end(), fresh.begin() + next, fresh.begin() + next + new_pages[layer]);
    next += new_pages[layer];
    const uint32_t first = seq.slots[layer * l.num_kv_heads].size();
    r.layer_pages[layer].assign(table.begin() + first / pt,
                                table.begin() + CeilDiv(uint64_t{first} + num_tokens, pt));
    for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
      const size_t lh = size_t{layer} * l.num_kv_heads + h;
      first_slots.push_back(seq.slots[lh].size());
      uneven = uneven || first_slots.back() != r.first_slot;
      seq.slots[lh].Append(seq.num_tokens, num_tokens);
    }
  }
  seq.num_tokens += num_tokens;
  if (uneven) r.first_slots = std::move(first_slots);
  return r;
}

absl::Status SequenceTable::WriteKV(SequenceId id, TenantId tenant, uint32_t layer,
                                    uint32_t token_start, uint32_t num_tokens, absl::string_view k,
                                    absl::string_view v) {
  absl::StatusOr<std::shared_ptr<Sequence>> found = Find(id, Caller::Tenant(tenant));
  if (!found.ok()) return found.status();
  Sequence& seq = **found;
  const KvLayout& l = seq.layout();
  if (layer >= l.num_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "layer: %u is out of range (the layout has %u layers)", layer, l.num_layers));
  }
  if (num_tokens == 0) return absl::InvalidArgumentError("num_tokens: must be > 0");
  const uint64_t want = uint64_t{l.num_kv_heads} * num_tokens * l.token_bytes();
  if (k.size() != want || v.size() != want) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "k/v: %d and %d bytes given, %d expected (%u heads x %u tokens x %u dim x %u bytes %s)",
        k.size(), v.size(), want, l.num_kv_heads, num_tokens, l.head_dim, DTypeBytes(l.dtype),
        DTypeName(l.dtype)));
  }
  absl::ReaderMutexLock lock(&seq.mu);
  if (seq.released) return NotFound(id);
  if (seq.migrating) return MigratingError(id);
  if (uint64_t{token_start} + num_tokens > seq.num_tokens) {
    return absl::OutOfRangeError(absl::StrFormat(
        "token_start: tokens [%u, %d) are not all reserved (sequence %d has %u tokens)",
        token_start, uint64_t{token_start} + num_tokens, id, seq.num_tokens));
  }
  std::vector<uint32_t> begin(l.num_kv_heads), count(l.num_kv_heads, num_tokens);
  for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
    const SlotMap& m = seq.slots[layer * l.num_kv_heads + h];
    const uint32_t s = m.LowerBound(token_start);
    // Positions are sorted and unique: the range is all live iff its last one is here.
    if (uint64_t{s} + num_tokens > m.size() ||
        m.position(s + num_tokens - 1) != token_start + num_tokens - 1) {
      return absl::FailedPreconditionError(
          absl::StrFormat("tokens [%u, %u) of layer %u head %u are no longer all held (epoch %d)",
                          token_start, token_start + num_tokens, layer, h, seq.epoch));
    }
    begin[h] = s;
  }
  LayerCopyPlan plan = PlanCopy(seq, layer, begin, count);
  const uint32_t first_page = begin[0] / l.page_tokens;
  for (size_t p = 0; p < plan.page_ptrs.size(); ++p) {
    const PageId page = seq.pages[layer][first_page + p];
    if (seq.pool->RefCount(page) > 1) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "tokens [%u, %u) of layer %u lie in page %u, shared read-only with a fork", token_start,
          token_start + num_tokens, layer, page));
    }
  }
  // The copy only reads from k and v in this direction.
  auto* kd = reinterpret_cast<uint8_t*>(const_cast<char*>(k.data()));
  auto* vd = reinterpret_cast<uint8_t*>(const_cast<char*>(v.data()));
  seq.Touch(Now());
  events().KvBytes(/*write=*/true, k.size() + v.size());
  return seq.pool->device_ops().CopyKv(l.geometry(), plan.page_ptrs, plan.begin, plan.count,
                                       kernels::CopyDirection::kDenseToPages, kd, vd);
}

absl::Status SequenceTable::CheckReadLocked(const Sequence& seq, uint32_t layer_start,
                                            uint32_t layer_count, uint32_t token_start,
                                            uint32_t token_end, std::optional<uint64_t> epoch) {
  const KvLayout& l = seq.layout();
  if (!seq.kv_lost.empty()) return absl::DataLossError(seq.kv_lost);
  if (layer_count == 0) return absl::InvalidArgumentError("layer_count: must be >= 1");
  if (uint64_t{layer_start} + layer_count > l.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("layer_start/layer_count: layers [%u, %d) exceed the layout's %u layers",
                        layer_start, uint64_t{layer_start} + layer_count, l.num_layers));
  }
  if (epoch.has_value() && *epoch != seq.epoch) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "epoch: sequence %d is at epoch %d, the read names epoch %d", seq.id, seq.epoch, *epoch));
  }
  if (token_start >= token_end || token_end > seq.num_tokens) {
    return absl::OutOfRangeError(
        absl::StrFormat("token range [%u, %u) is empty or past the %u reserved tokens", token_start,
                        token_end, seq.num_tokens));
  }
  return absl::OkStatus();
}

absl::StatusOr<ReadPlan> SequenceTable::PlanRead(SequenceId id, const Caller& caller,
                                                 uint32_t layer_start, uint32_t layer_count,
                                                 uint32_t token_start, uint32_t token_end,
                                                 std::optional<uint64_t> epoch) const {
  absl::StatusOr<std::shared_ptr<Sequence>> found = Find(id, caller);
  if (!found.ok()) return found.status();
  const Sequence& seq = **found;
  absl::ReaderMutexLock lock(&seq.mu);
  if (seq.released) return NotFound(id);
  ReadPlan plan{epoch.value_or(seq.epoch),
                layer_start,
                layer_count,
                token_start,
                token_end == 0 ? seq.num_tokens : token_end,
                seq.layout()};
  if (absl::Status s =
          CheckReadLocked(seq, layer_start, layer_count, token_start, plan.token_end, plan.epoch);
      !s.ok()) {
    return s;
  }
  return plan;
}

absl::StatusOr<KvSlice> SequenceTable::ReadKV(SequenceId id, const Caller& caller, uint32_t layer,
                                              uint32_t token_start, uint32_t token_end,
                                              std::optional<uint64_t> expected_epoch) const {
  absl::StatusOr<std::shared_ptr<Sequence>> found = Find(id, caller);
  if (!found.ok()) return found.status();
  const Sequence& seq = **found;
  const KvLayout& l = seq.layout();
  absl::ReaderMutexLock lock(&seq.mu);
  if (seq.released) return NotFound(id);
  if (absl::Status s = CheckReadLocked(seq, layer, 1, token_start, token_end, expected_epoch);
      !s.ok())
    return s;
  seq.Touch(Now());
  KvSlice out;
  out.epoch = seq.epoch;
  std::vector<uint32_t> begin(l.num_kv_heads);
  out.head_live_counts.resize(l.num_kv_heads);
  uint64_t total = 0;
  bool dense = true;
  for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
    const SlotMap& m = seq.slots[layer * l.num_kv_heads + h];
    begin[h] = m.LowerBound(token_start);
    out.head_live_counts[h] = m.LowerBound(token_end) - begin[h];
    total += out.head_live_counts[h];
    dense = dense && out.head_live_counts[h] == token_end - token_start;
  }
  if (!dense) {
    for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
      const SlotMap& m = seq.slots[layer * l.num_kv_heads + h];
      for (uint32_t i = 0; i < out.head_live_counts[h]; ++i)
        out.positions.push_back(m.position(begin[h] + i));
    }
  }
  out.k.resize(total * l.token_bytes());
  out.v.resize(total * l.token_bytes());
  events().KvBytes(/*write=*/false, out.k.size() + out.v.size());
  if (total == 0) return out;
  LayerCopyPlan plan = PlanCopy(seq, layer, begin, out.head_live_counts);
  if (absl::Status s = seq.pool->device_ops().CopyKv(
          l.geometry(), plan.page_ptrs, plan.begin, plan.count,
          kernels::CopyDirection::kPagesToDense, reinterpret_cast<uint8_t*>(out.k.data()),
          reinterpret_cast<uint8_t*>(out.v.data()));
      !s.ok()) {
    return s;
  }
  return out;
}

absl::StatusOr<ForkResult> SequenceTable::Fork(SequenceId parent_id, TenantId tenant,
                                               LeaseId lease) {
  absl::StatusOr<std::shared_ptr<Sequence>> found = Find(parent_id, Caller::Tenant(tenant));
  if (!found.ok()) return found.status();
  Sequence& parent = **found;
  if (absl::Status s = options_.leases->CheckActive(lease, tenant); !s.ok()) return s;
  auto child = std::make_shared<Sequence>();
  child->tenant = tenant;
  child->lease = lease;
  child->pool = parent.pool;
  child->max_tokens = parent.max_tokens;
  child->parent = parent_id;
  child->policy = parent.policy;
  child->created = Now();
  child->Touch(Now());
  ForkResult result;
  {
    absl::ReaderMutexLock lock(&parent.mu);
    if (parent.released) return NotFound(parent_id);
    if (!parent.kv_lost.empty()) return absl::DataLossError(parent.kv_lost);
    // A fork copies or shares the bytes as they are: not while a transfer writes them.
    if (parent.TransfersBusy(/*writes_only=*/true)) return TransferBusyError(parent_id);
    const KvLayout& l = parent.layout();
    PagePool& pool = *parent.pool;
    // Full pages are shared; a partly filled last page is copied so both sides can
    // keep appending to their own. Compressing policies rewrite pages in place when they
    // compact, so their forks copy every page instead of sharing.
    const bool share = parent.policy.Strategy().ForkSharesPages();
    std::unique_ptr<RetentionState> state;
    if (parent.retention != nullptr) {
      absl::StatusOr<std::unique_ptr<RetentionState>> cloned = parent.retention->Clone();
      if (!cloned.ok()) return cloned.status();
      state = *std::move(cloned);
    }
    std::vector<std::pair<uint32_t, uint32_t>> copy_list;  // (layer, page index)
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      const uint32_t pages = static_cast<uint32_t>(parent.pages[layer].size());
      if (!share) {
        for (uint32_t i = 0; i < pages; ++i) copy_list.emplace_back(layer, i);
      } else if (parent.LayerSlots(layer) % l.page_tokens != 0) {
        copy_list.emplace_back(layer, pages - 1);
      }
    }
    const uint32_t copies = static_cast<uint32_t>(copy_list.size());
    if (absl::Status s = options_.ledger->Charge(tenant, copies, pool.page_bytes()); !s.ok()) {
      return s;
    }
    std::vector<PageId> fresh;
    if (absl::Status s = pool.Allocate(tenant, copies, &fresh); !s.ok()) {
      options_.ledger->Refund(tenant, copies, pool.page_bytes());
      return s;
    }
    absl::MutexLock child_lock(&child->mu);
    child->epoch = parent.epoch;
    child->num_tokens = parent.num_tokens;
    child->slots = parent.slots;
    child->evicted = parent.evicted;
    child->reserved_at_ms = parent.reserved_at_ms;
    child->retention = std::move(state);
    child->pages = parent.pages;
    std::vector<PoolDevice::PageCopy> page_copies;
    for (size_t i = 0; i < copy_list.size(); ++i) {
      PageId& page = child->pages[copy_list[i].first][copy_list[i].second];
      page_copies.push_back({pool.PageData(fresh[i]), pool.PageData(page)});
      page = fresh[i];
    }
    if (absl::Status s = pool.device_ops().CopyPages(page_copies, pool.page_bytes()); !s.ok()) {
      // Device failure mid-fork: give the fresh pages back; the parent is untouched.
      pool.Unref(fresh);
      return s;
    }
    std::vector<PageId> shared;
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      for (uint32_t i = 0; i < child->pages[layer].size(); ++i) {
        if (child->pages[layer][i] == parent.pages[layer][i])
          shared.push_back(parent.pages[layer][i]);
      }
    }
    pool.Ref(shared);
    result.shared_pages = static_cast<uint32_t>(shared.size());
    result.copied_pages = copies;
  }
  Sequence* raw = child.get();
  if (absl::Status s = Insert(child); !s.ok()) {
    absl::MutexLock lock(&raw->mu);
    ReleaseLocked(*raw);
    return s;
  }
  result.id = raw->id;
  return result;
}

uint64_t SequenceTable::ReleaseLocked(Sequence& seq) {
  if (seq.released) return 0;
  seq.released = true;
  std::vector<PageId> all;
  for (const auto& table : seq.pages) all.insert(all.end(), table.begin(), table.end());
  seq.pages.clear();
  seq.slots.clear();
  return seq.pool->Unref(all);
}

absl::StatusOr<uint64_t> SequenceTable::Release(SequenceId id, TenantId tenant) {
  std::shared_ptr<Sequence> seq;
  {
    absl::MutexLock lock(&mu_);
    auto it = sequences_.find(id);
    if (it == sequences_.end() || it->second->tenant != tenant) return NotFound(id);
    seq = std::move(it->second);
    sequences_.erase(it);
    --tenant_sequences_[tenant];
  }
  ReportEnd(*seq, SequenceEnd::kReleased);
  absl::MutexLock lock(&seq->mu);
  return ReleaseLocked(*seq);
}

void SequenceTable::ReportEnd(const Sequence& seq, SequenceEnd why) {
  if (options_.on_sequence_ended) options_.on_sequence_ended(seq.id, why);
  const absl::Time now = Now();
  events().SequenceEnded(
      seq.policy.Strategy(), why, now - seq.created,
      now - absl::FromUnixMillis(seq.last_active_ms.load(std::memory_order_relaxed)));
}

void SequenceTable::ReportCompression(const Sequence& seq, RetentionCause cause,
                                      absl::Span<const HeadRetention> changes, absl::Time started) {
  if (changes.empty()) return;
  const absl::Time now = Now();
  events().Compressed(seq.policy.Strategy(), cause, changes, seq.reserved_at_ms,
                      absl::ToUnixMillis(now), now - started);
}

size_t SequenceTable::ReleaseByLease(LeaseId lease) {
  std::vector<std::shared_ptr<Sequence>> doomed;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = sequences_.begin(); it != sequences_.end();) {
      if (it->second->lease == lease) {
        --tenant_sequences_[it->second->tenant];
        doomed.push_back(std::move(it->second));
        sequences_.erase(it++);
      } else {
        ++it;
      }
    }
  }
  for (auto& seq : doomed) {
    ReportEnd(*seq, SequenceEnd::kLeaseEnded);
    absl::MutexLock lock(&seq->mu);
    ReleaseLocked(*seq);
  }
  EndTransfersWhere([lease](const TransferLeases::Record& t) { return t.info.lease == lease; },
                    TransferEnd::kLeaseEnded);
  return doomed.size();
}

namespace {

SequenceInfo Snapshot(const Sequence& seq, bool include_pages, bool include_heads)
    ABSL_SHARED_LOCKS_REQUIRED(seq.mu) {
  SequenceInfo s;
  s.id = seq.id;
  s.tenant = seq.tenant;
  s.pool = seq.pool->name();
  s.lease = seq.lease;
  s.layout = seq.layout();
  s.epoch = seq.epoch;
  s.num_tokens = seq.num_tokens;
  s.max_tokens = seq.max_tokens;
  s.policy = seq.policy.Name();
  s.policy_summary = seq.policy.Summary();
  s.pressure_note = seq.pressure_note;
  s.decode_steps = seq.retention ? seq.retention->decode_steps() : 0;
  s.parent = seq.parent;
  for (const auto& table : seq.pages) {
    s.layer_num_pages.push_back(static_cast<uint32_t>(table.size()));
    s.pages_held += static_cast<uint32_t>(table.size());
    s.shared_pages += seq.pool->CountShared(table);
    if (include_pages) s.layer_pages.push_back(table);
  }
  if (include_heads) {
    s.heads.resize(seq.slots.size());
    const uint32_t heads = seq.layout().num_kv_heads;
    std::vector<uint32_t> live(seq.slots.size());
    for (size_t i = 0; i < seq.slots.size(); ++i) {
      HeadInfo& h = s.heads[i];
      h.live_slots = live[i] = seq.slots[i].size();
      h.budget = seq.Budget(static_cast<uint32_t>(i / heads));
      h.evicted = seq.evicted[i];
    }
    if (seq.retention != nullptr) {
      std::vector<std::vector<HeadFigure>> figures = seq.retention->Describe(live);
      for (size_t i = 0; i < figures.size() && i < s.heads.size(); ++i)
        s.heads[i].figures = std::move(figures[i]);
    }
  }
  return s;
}

}  // namespace

absl::StatusOr<SequenceInfo> SequenceTable::Describe(SequenceId id, const Caller& caller,
                                                     bool include_pages, bool include_heads) const {
  absl::StatusOr<std::shared_ptr<Sequence>> found = Find(id, caller);
  if (!found.ok()) return found.status();
  absl::ReaderMutexLock lock(&(*found)->mu);
  if ((*found)->released) return NotFound(id);
  return Snapshot(**found, include_pages, include_heads);
}

uint32_t SequenceTable::TenantSequences(TenantId tenant) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = tenant_sequences_.find(tenant);
  return it == tenant_sequences_.end() ? 0 : it->second;
}

std::vector<SequenceInfo> SequenceTable::List(std::optional<TenantId> tenant,
                                              const std::string& pool, SequenceId after,
                                              size_t limit, SequenceId* more_after) const {
  std::vector<std::shared_ptr<Sequence>> picked;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [id, seq] : sequences_) {
      if (id <= after) continue;
      if (tenant.has_value() && seq->tenant != *tenant) continue;
      if (!pool.empty() && seq->pool->name() != pool) continue;
      picked.push_back(seq);
    }
  }
  // The `limit` smallest ids, without sorting (or snapshotting) the rest.
  auto by_id = [](const auto& a, const auto& b) { return a->id < b->id; };
  if (more_after != nullptr) *more_after = 0;
  if (picked.size() > limit) {
    std::nth_element(picked.begin(), picked.begin() + limit, picked.end(), by_id);
    picked.resize(limit);
    if (more_after != nullptr)
      *more_after = std::max_element(picked.begin(), picked.end(), by_id)->get()->id;
  }
  std::vector<SequenceInfo> out;
  for (const auto& seq : picked) {
    absl::ReaderMutexLock lock(&seq->mu);
    if (!seq->released) out.push_back(Snapshot(*seq, false, false));
  }
  std::sort(out.begin(), out.end(),
            [](const SequenceInfo& a, const SequenceInfo& b) { return a.id < b.id; });
  return out;
}

absl::Status SequenceTable::CheckInvariants(absl::Span<PagePool* const> pools) const {
  absl::ReaderMutexLock lock(&mu_);
  absl::flat_hash_map<const PagePool*, absl::flat_hash_map<PageId, uint32_t>> refs;
  for (const auto& [id, seq] : sequences_) {
    absl::ReaderMutexLock seq_lock(&seq->mu);
    auto& pool_refs = refs[seq->pool];
    const KvLayout& l = seq->layout();
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      const auto& table = seq->pages[layer];
      if (table.size() != CeilDiv(seq->LayerSlots(layer), l.page_tokens)) {
        return absl::InternalError(absl::StrFormat("sequence %d layer %u: %d pages for %u slots",
                                                   id, layer, table.size(),
                                                   seq->LayerSlots(layer)));
      }
      for (PageId p : table) {
        ++pool_refs[p];
        if (seq->pool->OwnerOf(p) != seq->tenant) {
          return absl::InternalError(
              absl::StrFormat("sequence %d holds page %u of another tenant's chunk", id, p));
        }
      }
    }
  }
  std::vector<uint64_t> tenant_pages(options_.ledger->size(), 0);
  for (PagePool* pool : pools) {
    if (absl::Status s = pool->CheckInvariants(); !s.ok()) return s;
    const auto& pool_refs = refs[pool];
    for (const auto& [page, n] : pool_refs) {
      if (pool->RefCount(page) != n) {
        return absl::InternalError(absl::StrFormat("pool '%s' page %u: refcount %u, %u owners",
                                                   pool->name(), page, pool->RefCount(page), n));
      }
    }
    PagePoolStats stats = pool->Stats();
    if (stats.used_pages != pool_refs.size() + stats.orphan_pinned_pages) {
      return absl::InternalError(absl::StrFormat(
          "pool '%s': %d pages in use, %d owned by sequences, %d pinned orphans", pool->name(),
          stats.used_pages, pool_refs.size(), stats.orphan_pinned_pages));
    }
    for (const PoolTenantStats& t : stats.tenants) {
      if (t.tenant >= tenant_pages.size()) tenant_pages.resize(t.tenant + 1, 0);  // added since
      tenant_pages[t.tenant] += t.pages;
    }
  }
  for (TenantId t = 0; t < tenant_pages.size(); ++t) {
    const uint64_t charged = options_.ledger->Usage(t).pages;
    if (charged != tenant_pages[t]) {
      return absl::InternalError(absl::StrFormat("tenant '%s': ledger says %d pages, pools %d",
                                                 options_.ledger->name(t), charged,
                                                 tenant_pages[t]));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvwarden
