// SequenceTable's migrations: the source pins and describes a sequence for another
// daemon (BeginMigration/EndMigration); the target adopts one from its image and bytes
// (Adopt). The bytes move between them on the source's TCP data path under the
// migration's transfer lease (cache_service/cluster/migration.h).

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/core/sequences/retention_strategy.h"
#include "cache_service/core/sequences/sequence.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "common/codec/checked_record.h"

namespace kvwarden {
namespace {

uint32_t CeilDiv(uint64_t a, uint32_t b) { return static_cast<uint32_t>((a + b - 1) / b); }

// CRC-32C of one page's bytes, wherever the pool keeps them (`scratch`: a host copy
// for device memory).
absl::StatusOr<uint32_t> PageCrc(const PagePool& pool, PageId page, std::string& scratch) {
  const uint8_t* data = pool.PageData(page);
  if (pool.device() != "cpu") {
    scratch.resize(pool.page_bytes());
    if (absl::Status s = pool.device_ops().CopyToHost(reinterpret_cast<uint8_t*>(scratch.data()),
                                                      data, pool.page_bytes());
        !s.ok()) {
      return s;
    }
    return Crc32c(scratch);
  }
  return Crc32c(absl::string_view(reinterpret_cast<const char*>(data), pool.page_bytes()));
}

// Everything an image claims, checked against the pool it is to live in: it comes from
// another daemon and is trusted no further than the checks here.
absl::Status CheckImage(const SequenceImage& im, const PagePool& pool) {
  const KvLayout& l = pool.layout();
  if (!(im.layout == l)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("pool '%s' holds %s; the sequence's layout is %s", pool.name(),
                        l.ToString(), im.layout.ToString()));
  }
  if (im.max_tokens == 0 || im.num_tokens > im.max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrFormat("image: %u tokens of max_tokens %u", im.num_tokens, im.max_tokens));
  }
  const size_t heads = size_t{l.num_layers} * l.num_kv_heads;
  if (im.heads.size() != heads || im.layer_pages.size() != l.num_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "image: %d heads and %d layers' page counts for a layout of %d heads and %u layers",
        im.heads.size(), im.layer_pages.size(), heads, l.num_layers));
  }
  uint64_t total_pages = 0;
  const uint32_t max_pages = CeilDiv(im.max_tokens, l.page_tokens);
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    uint32_t fullest = 0;
    for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
      const HeadImage& head = im.heads[size_t{layer} * l.num_kv_heads + h];
      if (head.live > im.num_tokens) {
        return absl::InvalidArgumentError(
            absl::StrFormat("image: layer %u head %u holds %u slots of %u tokens", layer, h,
                            head.live, im.num_tokens));
      }
      if (!head.positions.empty()) {
        if (head.positions.size() != head.live) {
          return absl::InvalidArgumentError(
              absl::StrFormat("image: layer %u head %u lists %d positions for %u slots", layer, h,
                              head.positions.size(), head.live));
        }
        for (size_t i = 0; i < head.positions.size(); ++i) {
          if (head.positions[i] >= im.num_tokens ||
              (i > 0 && head.positions[i] <= head.positions[i - 1])) {
            return absl::InvalidArgumentError(
                absl::StrFormat("image: layer %u head %u: positions must ascend below %u", layer, h,
                                im.num_tokens));
          }
        }
      }
      fullest = std::max(fullest, head.live);
    }
    const uint32_t pages = im.layer_pages[layer];
    if (pages < CeilDiv(fullest, l.page_tokens) || pages > max_pages) {
      return absl::InvalidArgumentError(
          absl::StrFormat("image: layer %u has %u pages for %u slots (max_tokens %u)", layer, pages,
                          fullest, im.max_tokens));
    }
    total_pages += pages;
  }
  if (im.page_crc32c.size() != total_pages) {
    return absl::InvalidArgumentError(absl::StrFormat("image: %d page checksums for %d pages",
                                                      im.page_crc32c.size(), total_pages));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MigrationStart> SequenceTable::BeginMigration(SequenceId id, const Caller& caller,
                                                             absl::Duration ttl) {
  if (ttl <= absl::ZeroDuration() || ttl > kMaxTransferTtl) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl: must be in (0, ", absl::ToInt64Milliseconds(kMaxTransferTtl), "] ms"));
  }
  absl::StatusOr<net::DataSecret> secret = NewDataSecret();
  if (!secret.ok()) return secret.status();
  MigrationStart out;
  std::shared_ptr<Sequence> seq;
  PagePool* pool = nullptr;
  std::vector<PageId> pinned;
  {
    absl::MutexLock table_lock(&mu_);
    auto it = sequences_.find(id);
    if (it == sequences_.end() || !caller.CanSee(it->second->tenant)) {
      return absl::NotFoundError(absl::StrCat("sequence ", id, " not found"));
    }
    seq = it->second;
    if (absl::Status s = options_.leases->CheckActive(seq->lease, seq->tenant); !s.ok()) return s;
    if (absl::Status s = CheckTransferLimitLocked(seq->tenant); !s.ok()) return s;
    absl::MutexLock seq_lock(&seq->mu);
    if (!seq->kv_lost.empty()) return absl::DataLossError(seq->kv_lost);
    if (seq->migrating) {
      return absl::FailedPreconditionError(absl::StrCat("sequence ", id, " is already migrating"));
    }
    if (seq->TransfersBusy(/*writes_only=*/true)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "sequence ", id, ": a write transfer lease holds it; migrate it once the transfer ends"));
    }
    pool = seq->pool;
    const KvLayout& l = seq->layout();
    SequenceImage& im = out.image;
    im.id = id;
    im.tenant = seq->tenant;
    im.pool = pool->name();
    im.layout = l;
    im.policy_wire = seq->policy.wire;
    im.max_tokens = seq->max_tokens;
    im.num_tokens = seq->num_tokens;
    im.epoch = seq->epoch;
    im.heads.resize(seq->slots.size());
    for (size_t lh = 0; lh < seq->slots.size(); ++lh) {
      im.heads[lh].live = seq->slots[lh].size();
      im.heads[lh].positions = seq->slots[lh].positions();
      im.heads[lh].evicted = seq->evicted[lh];
    }
    if (seq->retention != nullptr) {
      absl::StatusOr<std::string> state = seq->retention->Encode();
      if (!state.ok()) return state.status();
      im.retention_state = *std::move(state);
    }
    TransferLeases::Record t;
    t.layer_offsets.push_back(0);
    uint32_t widest = 0;
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      const std::vector<PageId>& table = seq->pages[layer];
      im.layer_pages.push_back(static_cast<uint32_t>(table.size()));
      pinned.insert(pinned.end(), table.begin(), table.end());
      t.layer_offsets.push_back(pinned.size());
      widest = std::max<uint32_t>(widest, table.size());
    }
    pool->Pin(pinned);
    ++seq->transfers;
    seq->migrating = true;
    const absl::Time now = Now();
    out.transfer = transfers_.NewId();
    out.secret = *secret;
    out.expires = now + ttl;
    t.secret = *secret;
    t.migration = true;
    t.info = TransferInfo{out.transfer,        seq->tenant, seq->lease,   id, pool->name(),
                          TransferMode::kRead, 0,           l.num_layers, 0,  widest,
                          pinned.size(),       now,         out.expires};
    t.seq = seq;
    t.pinned = pinned;
    transfers_.Add(std::move(t));
  }
  events().TransferBegun(/*write=*/false, uint64_t{pinned.size()} * pool->page_bytes());
  // Checksums outside every lock: the pages are pinned and the sequence takes no
  // writes, so they hold still until the lease ends.
  std::string scratch;
  out.image.page_crc32c.reserve(pinned.size());
  for (PageId page : pinned) {
    absl::StatusOr<uint32_t> crc = PageCrc(*pool, page, scratch);
    if (!crc.ok()) {
      (void)EndMigration(out.transfer, id, /*adopted=*/false);
      return crc.status();
    }
    out.image.page_crc32c.push_back(*crc);
  }
  return out;
}

absl::Status SequenceTable::EndMigration(TransferId transfer, SequenceId id, bool adopted) {
  absl::StatusOr<TransferLeases::Record> t;
  {
    absl::MutexLock lock(&mu_);
    t = transfers_.Take(transfer, Caller::Admin());
  }
  absl::Status ended = t.status();
  if (t.ok()) ended = FinishTransfer(*t, TransferEnd::kCompleted);
  if (!adopted) return ended;
  // The target holds it now: release it here, whatever became of the lease meanwhile.
  std::shared_ptr<Sequence> seq;
  {
    absl::MutexLock lock(&mu_);
    auto it = sequences_.find(id);
    if (it == sequences_.end()) return ended;  // released meanwhile (its lease lapsed)
    seq = std::move(it->second);
    sequences_.erase(it);
    --tenant_sequences_[seq->tenant];
  }
  ReportEnd(*seq, SequenceEnd::kMigrated);
  absl::MutexLock lock(&seq->mu);
  ReleaseLocked(*seq);
  return ended;
}

absl::StatusOr<SequenceId> SequenceTable::Adopt(const AdoptArgs& args, PageFill fill) {
  const SequenceImage& im = *args.image;
  PagePool& pool = *args.pool;
  if (absl::Status s = CheckImage(im, pool); !s.ok()) return s;
  const KvLayout& l = pool.layout();
  // Refused before a page is taken: a lapsed lease, a tenant at its sequence limit.
  if (absl::Status s = options_.leases->CheckActive(args.lease, args.tenant); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<RetentionState>> state = args.policy.Strategy().DecodeState(
      args.policy, im.heads.size(), pool.device_ops(), im.retention_state);
  if (!state.ok()) return state.status();

  uint64_t total = 0;
  for (uint32_t n : im.layer_pages) total += n;
  if (absl::Status s = options_.ledger->Charge(args.tenant, total, pool.page_bytes()); !s.ok())
    return s;
  std::vector<PageId> fresh;
  if (absl::Status s = pool.Allocate(args.tenant, static_cast<uint32_t>(total), &fresh); !s.ok()) {
    options_.ledger->Refund(args.tenant, total, pool.page_bytes());
    return s;
  }
  // From here on a failure gives the pages back; the pool's free callback refunds them.
  auto give_back = [&](absl::Status s) {
    pool.Unref(fresh);
    return s;
  };
  std::string scratch;
  size_t next = 0;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    const absl::Span<const PageId> pages(fresh.data() + next, im.layer_pages[layer]);
    if (!pages.empty()) {
      if (absl::Status s = fill(layer, pages); !s.ok()) return give_back(s);
    }
    for (size_t i = 0; i < pages.size(); ++i) {
      absl::StatusOr<uint32_t> crc = PageCrc(pool, pages[i], scratch);
      if (!crc.ok()) return give_back(crc.status());
      if (*crc != im.page_crc32c[next + i]) {
        return give_back(
            absl::DataLossError(absl::StrFormat("page %d of layer %u arrived with checksum %08x, "
                                                "the source's is %08x: nothing was adopted",
                                                i, layer, *crc, im.page_crc32c[next + i])));
      }
    }
    next += pages.size();
  }

  auto seq = std::make_shared<Sequence>();
  seq->tenant = args.tenant;
  seq->lease = args.lease;
  seq->pool = &pool;
  seq->max_tokens = im.max_tokens;
  seq->policy = args.policy;
  seq->created = Now();
  seq->Touch(Now());
  {
    absl::MutexLock lock(&seq->mu);
    seq->epoch = im.epoch;
    seq->num_tokens = im.num_tokens;
    seq->pages.resize(l.num_layers);
    next = 0;
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      seq->pages[layer].assign(fresh.begin() + next, fresh.begin() + next + im.layer_pages[layer]);
      next += im.layer_pages[layer];
    }
    seq->slots.resize(im.heads.size());
    seq->evicted.resize(im.heads.size());
    for (size_t lh = 0; lh < im.heads.size(); ++lh) {
      if (im.heads[lh].positions.empty()) {
        seq->slots[lh].Append(0, im.heads[lh].live);
      } else {
        seq->slots[lh].Assign(im.heads[lh].positions);
      }
      seq->evicted[lh] = im.heads[lh].evicted;
    }
    // When each token was reserved stayed on the source: its lifetime here starts now.
    seq->reserved_at_ms.assign(im.num_tokens, absl::ToUnixMillis(Now()));
    seq->retention = *std::move(state);
  }
  Sequence* raw = seq.get();
  if (absl::Status s = Insert(seq); !s.ok()) {
    absl::MutexLock lock(&seq->mu);
    ReleaseLocked(*seq);
    return s;
  }
  return raw->id;
}

}  // namespace kvwarden
