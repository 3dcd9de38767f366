// Model-based test of PagePool + TenantLedger + SequenceTable + WorkerLeases: random
// create / fork / reserve / write / read / release / lease expiry / transfer leases
// (begin, end, expiry) against a plain in-memory model; the real parts are checked against it and against the invariants
// after every step. Rerun a failure with --gtest_random_seed=<printed seed>.

#include <map>
#include <random>

#include "gtest/gtest.h"
#include "tests/support/core_fixture.h"
#include "tests/support/kv_pattern.h"

namespace kvwarden {
namespace {

using testing::Core;
using testing::CoreConfig;
using testing::PatternKv;

// A model page: who wrote each slot (0 = never written) and how many sequences share it.
struct ModelPage {
  std::vector<uint64_t> writer;  // [slot], one writer per token (all heads written together)
  int refs = 1;
  int pins = 0;  // transfer leases holding it; a released page stays charged while pinned
};

struct ModelTransfer {
  SequenceId seq;
  TenantId tenant;
  LeaseId lease;
  bool write;
  absl::Time expires;
  std::vector<int> pages;
};

struct ModelSeq {
  TenantId tenant;
  LeaseId lease;
  uint32_t max_tokens;
  uint32_t num_tokens = 0;
  std::vector<std::vector<int>> pages;  // [layer] -> model page index
};

class Model {
 public:
  explicit Model(const CoreConfig& cfg) : cfg_(cfg) {}

  uint64_t TenantPages(TenantId t) const {
    uint64_t n = 0;
    for (const ModelPage& p : pages_) {
      n += ((p.refs > 0 || p.pins > 0) && owner_.at(&p - pages_.data()) == t);
    }
    return n;
  }
  int NewPage(TenantId t) {
    pages_.push_back(ModelPage{std::vector<uint64_t>(cfg_.layout.page_tokens, 0), 1});
    owner_[pages_.size() - 1] = t;
    return static_cast<int>(pages_.size() - 1);
  }
  uint64_t Quota(TenantId t) const { return t == 0 ? cfg_.alpha_quota_pages : cfg_.beta_quota_pages; }

  const CoreConfig cfg_;
  std::vector<ModelPage> pages_;
  std::map<size_t, TenantId> owner_;
  std::map<SequenceId, ModelSeq> seqs;
  std::map<LeaseId, TenantId> leases;
  std::map<TransferId, ModelTransfer> transfers;

  bool WriteTransferOn(SequenceId id) const {
    for (const auto& [tid, t] : transfers) {
      if (t.seq == id && t.write) return true;
    }
    return false;
  }
  void EndTransfer(std::map<TransferId, ModelTransfer>::iterator it) {
    for (int p : it->second.pages) --pages_[p].pins;
    transfers.erase(it);
  }
};

TEST(SequenceModelTest, RandomOperationsMatchTheModel) {
  const uint32_t seed = ::testing::UnitTest::GetInstance()->random_seed();
  std::printf("sequence model seed: %u (rerun with --gtest_random_seed=%u)\n", seed, seed);
  std::mt19937 rng(seed);
  auto uniform = [&](uint32_t lo, uint32_t hi) { return std::uniform_int_distribution<uint32_t>(lo, hi)(rng); };

  CoreConfig cfg;
  cfg.layout = KvLayout{2, 3, 2, DType::kFp16, 3};  // odd sizes on purpose
  cfg.chunk_pages = 4;
  cfg.alpha_quota_pages = 40;
  cfg.beta_quota_pages = 24;
  cfg.num_chunks = 64;  // >= sum of quotas: only quotas can refuse, never fragmentation
  Core core(cfg);
  Model model(cfg);
  const KvLayout& l = cfg.layout;
  const uint32_t pt = l.page_tokens;
  uint64_t write_seed = 1;

  auto pick_seq = [&]() -> std::map<SequenceId, ModelSeq>::iterator {
    auto it = model.seqs.begin();
    std::advance(it, uniform(0, model.seqs.size() - 1));
    return it;
  };
  auto drop_pages = [&](ModelSeq& s) {
    for (auto& table : s.pages) {
      for (int p : table) --model.pages_[p].refs;
    }
  };

  for (int step = 0; step < 3000; ++step) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed << " step " << step);
    const uint32_t op = uniform(0, 99);
    if (model.leases.size() < 3 || op < 3) {  // register a worker
      const TenantId t = uniform(0, 1);
      model.leases[core.Lease(t)] = t;
    } else if (op < 15 || model.seqs.empty()) {  // create
      auto lit = model.leases.begin();
      std::advance(lit, uniform(0, model.leases.size() - 1));
      const uint32_t max_tokens = uniform(1, 40);
      auto id = core.table->Create({lit->second, lit->first, core.pool.get(), max_tokens});
      ASSERT_TRUE(id.ok()) << id.status();
      model.seqs[*id] = ModelSeq{lit->second, lit->first, max_tokens, 0,
                                 std::vector<std::vector<int>>(l.num_layers)};
    } else if (op < 45) {  // reserve
      auto it = pick_seq();
      ModelSeq& s = it->second;
      const uint32_t n = uniform(1, 8);
      auto r = core.table->Reserve(it->first, s.tenant, n);
      if (s.num_tokens + n > s.max_tokens) {
        ASSERT_EQ(r.status().code(), absl::StatusCode::kOutOfRange);
        continue;
      }
      const uint32_t need_per_layer = (s.num_tokens + n + pt - 1) / pt - s.pages[0].size();
      if (model.TenantPages(s.tenant) + need_per_layer * l.num_layers > model.Quota(s.tenant)) {
        ASSERT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
        continue;
      }
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->first_position, s.num_tokens);
      for (auto& table : s.pages) {
        for (uint32_t i = 0; i < need_per_layer; ++i) table.push_back(model.NewPage(s.tenant));
      }
      s.num_tokens += n;
    } else if (op < 65) {  // write
      auto it = pick_seq();
      ModelSeq& s = it->second;
      if (s.num_tokens == 0) continue;
      const uint32_t layer = uniform(0, l.num_layers - 1);
      const uint32_t start = uniform(0, s.num_tokens - 1);
      const uint32_t n = uniform(1, s.num_tokens - start);
      const uint64_t ws = ++write_seed;
      absl::Status st = core.table->WriteKV(
          it->first, s.tenant, layer, start, n,
          PatternKv(ws, layer, l.num_kv_heads, start, n, l.token_bytes(), false),
          PatternKv(ws, layer, l.num_kv_heads, start, n, l.token_bytes(), true));
      bool shared = false;
      for (uint32_t p = start / pt; p <= (start + n - 1) / pt; ++p) {
        shared = shared || model.pages_[s.pages[layer][p]].refs > 1;
      }
      if (shared) {
        ASSERT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
        continue;
      }
      ASSERT_TRUE(st.ok()) << st;
      for (uint32_t t = start; t < start + n; ++t) {
        model.pages_[s.pages[layer][t / pt]].writer[t % pt] = ws;
      }
    } else if (op < 80) {  // read and compare every written token
      auto it = pick_seq();
      ModelSeq& s = it->second;
      if (s.num_tokens == 0) continue;
      const uint32_t layer = uniform(0, l.num_layers - 1);
      auto slice = core.table->ReadKV(it->first, Caller::Tenant(s.tenant), layer, 0, s.num_tokens, std::nullopt);
      ASSERT_TRUE(slice.ok()) << slice.status();
      const size_t tb = l.token_bytes();
      for (uint32_t t = 0; t < s.num_tokens; ++t) {
        const uint64_t ws = model.pages_[s.pages[layer][t / pt]].writer[t % pt];
        if (ws == 0) continue;
        const std::string k1 = PatternKv(ws, layer, l.num_kv_heads, t, 1, tb, false);
        for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
          ASSERT_EQ(slice->k.substr((size_t{h} * s.num_tokens + t) * tb, tb), k1.substr(h * tb, tb))
              << "layer " << layer << " head " << h << " token " << t;
        }
      }
    } else if (op < 84) {  // begin a transfer lease
      auto it = pick_seq();
      ModelSeq& s = it->second;
      if (s.num_tokens == 0) continue;
      TransferArgs a;
      a.tenant = s.tenant;
      a.lease = s.lease;
      a.sequence = it->first;
      a.layer_start = uniform(0, l.num_layers - 1);
      a.layer_count = uniform(1, l.num_layers - a.layer_start);
      a.slot_start = uniform(0, s.num_tokens - 1);
      a.slot_end = uniform(a.slot_start + 1, s.num_tokens + 2);  // sometimes past the end
      a.mode = uniform(0, 1) ? TransferMode::kWrite : TransferMode::kRead;
      a.ttl = absl::Seconds(uniform(1, 60));
      auto g = core.table->BeginTransfer(a);
      if (a.slot_end > s.num_tokens) {
        ASSERT_EQ(g.status().code(), absl::StatusCode::kOutOfRange) << g.status();
        continue;
      }
      std::vector<int> pages;
      bool shared = false;
      for (uint32_t layer = a.layer_start; layer < a.layer_start + a.layer_count; ++layer) {
        for (uint32_t p = a.slot_start / pt; p < (a.slot_end + pt - 1) / pt; ++p) {
          pages.push_back(s.pages[layer][p]);
          shared = shared || model.pages_[s.pages[layer][p]].refs > 1;
        }
      }
      if (shared && a.mode == TransferMode::kWrite) {
        ASSERT_EQ(g.status().code(), absl::StatusCode::kFailedPrecondition) << g.status();
        continue;
      }
      ASSERT_TRUE(g.ok()) << g.status();
      for (int p : pages) ++model.pages_[p].pins;
      model.transfers[g->id] = ModelTransfer{it->first, s.tenant, s.lease, a.mode == TransferMode::kWrite,
                                             core.clock.Now() + a.ttl, std::move(pages)};
    } else if (op < 86) {  // end a transfer lease
      if (model.transfers.empty()) continue;
      auto it = model.transfers.begin();
      std::advance(it, uniform(0, model.transfers.size() - 1));
      ASSERT_TRUE(core.table->EndTransfer(it->first, Caller::Tenant(it->second.tenant)).ok());
      model.EndTransfer(it);
    } else if (op < 90) {  // fork (waits while a transfer writes: not from this thread)
      auto it = pick_seq();
      if (model.WriteTransferOn(it->first)) continue;
      ModelSeq parent = it->second;
      LeaseId lease = parent.lease;
      auto f = core.table->Fork(it->first, parent.tenant, lease);
      uint32_t partial = parent.num_tokens % pt != 0 ? l.num_layers : 0;
      if (model.TenantPages(parent.tenant) + partial > model.Quota(parent.tenant)) {
        ASSERT_EQ(f.status().code(), absl::StatusCode::kResourceExhausted);
        continue;
      }
      ASSERT_TRUE(f.ok()) << f.status();
      ModelSeq child = parent;
      for (auto& table : child.pages) {
        for (size_t i = 0; i < table.size(); ++i) {
          if (i + 1 == table.size() && partial) {
            const int copy = model.NewPage(parent.tenant);
            model.pages_[copy].writer = model.pages_[table[i]].writer;
            table[i] = copy;
          } else {
            ++model.pages_[table[i]].refs;
          }
        }
      }
      model.seqs[f->id] = child;
    } else if (op < 96) {  // release (pinned pages stay until their transfers end)
      auto it = pick_seq();
      ASSERT_TRUE(core.table->Release(it->first, it->second.tenant).ok());
      drop_pages(it->second);
      model.seqs.erase(it);
    } else {  // a worker dies: its lease lapses, its sequences go
      auto lit = model.leases.begin();
      std::advance(lit, uniform(0, model.leases.size() - 1));
      const LeaseId dead = lit->first;
      // Everyone but `dead` keeps its lease alive across 11 s (TTL 10 s).
      for (absl::Duration d : {absl::Seconds(6), absl::Seconds(5)}) {
        for (const auto& [id, t] : model.leases) {
          if (id != dead) ASSERT_TRUE(core.leases.KeepAlive(id, t).ok());
        }
        core.clock.Advance(d);
      }
      auto expired = core.leases.TakeExpired();
      ASSERT_EQ(expired.size(), 1u);
      ASSERT_EQ(expired[0].id, dead);
      core.table->ReleaseByLease(dead);
      for (auto it = model.transfers.begin(); it != model.transfers.end();) {
        auto next = std::next(it);
        if (it->second.lease == dead) model.EndTransfer(it);
        it = next;
      }
      // The reaper's other job: transfers past their TTL.
      const size_t expired_transfers = core.table->ExpireTransfers();
      size_t modelled = 0;
      for (auto it = model.transfers.begin(); it != model.transfers.end();) {
        auto next = std::next(it);
        if (it->second.expires <= core.clock.Now()) {
          model.EndTransfer(it);
          ++modelled;
        }
        it = next;
      }
      ASSERT_EQ(expired_transfers, modelled);
      for (auto it = model.seqs.begin(); it != model.seqs.end();) {
        if (it->second.lease == dead) {
          drop_pages(it->second);
          it = model.seqs.erase(it);
        } else {
          ++it;
        }
      }
      model.leases.erase(lit);
    }
    ASSERT_TRUE(core.Check().ok()) << core.Check();
    for (TenantId t = 0; t < 2; ++t) ASSERT_EQ(core.ledger.Usage(t).pages, model.TenantPages(t));
    ASSERT_EQ(core.table->List(std::nullopt, "").size(), model.seqs.size());
    ASSERT_EQ(core.table->ListTransfers(std::nullopt).size(), model.transfers.size());
    uint64_t pinned = 0;
    for (const ModelPage& p : model.pages_) pinned += p.pins > 0;
    ASSERT_EQ(core.pool->Stats().pinned_pages, pinned);
  }
}

}  // namespace
}  // namespace kvwarden
