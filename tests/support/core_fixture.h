#pragma once

// The daemon's core parts wired as main wires them, on small memfd pools, for unit and
// model tests. Tenants: 0 "alpha" and 1 "beta" with the quotas given.

#include <atomic>
#include <memory>
#include <vector>

#include "cache_service/core/memory/page_pool.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "cache_service/core/tenancy/worker_leases.h"
#include "cache_service/retention/registry.h"
#include "tests/support/fake_clock.h"
#include "tests/support/kv_pattern.h"

namespace kvwarden::testing {

struct CoreConfig {
  KvLayout layout{2, 2, 4, DType::kFp16, 4};  // 2 layers, 2 heads, dim 4, 4 tokens/page
  uint32_t chunk_pages = 8;
  uint32_t num_chunks = 8;
  uint64_t alpha_quota_pages = 1000;
  uint64_t beta_quota_pages = 16;
  std::shared_ptr<PoolDevice> device;  // default cpu
};

class Core {
 public:
  explicit Core(const CoreConfig& cfg = CoreConfig())
      : ledger({TenantSpec{"alpha", 0, cfg.alpha_quota_pages, 2},
                TenantSpec{"beta", 0, cfg.beta_quota_pages, 1}}),
        leases(LeaseOptions{absl::Seconds(10), absl::Milliseconds(100), absl::Minutes(5)}, &clock) {
    PagePoolOptions opts;
    opts.name = "main";
    opts.layout = cfg.layout;
    opts.chunk_pages = cfg.chunk_pages;
    opts.num_chunks = cfg.num_chunks;
    opts.device = cfg.device;
    opts.on_pages_freed = [this](TenantId t, uint64_t pages, uint64_t page_bytes) {
      ledger.Refund(t, pages, page_bytes);
    };
    pool = *PagePool::Create(std::move(opts));
    SequenceTable::Options table_options{&ledger, &leases};
    table_options.on_transfers_changed = [this] { ++transfers_changed; };
    table = std::make_unique<SequenceTable>(std::move(table_options));
  }
  ~Core() { table.reset(); }

  LeaseId Lease(TenantId t) { return leases.Register(t, "w", WorkerRole::kBoth, absl::ZeroDuration())->id; }
  // Reserves `n` tokens and writes PatternKv(1, ...) bytes for them in every layer.
  absl::Status ReserveAndWrite(SequenceId id, TenantId tenant, uint32_t n) {
    absl::StatusOr<Reservation> r = table->Reserve(id, tenant, n);
    if (!r.ok()) return r.status();
    for (uint32_t layer = 0; layer < pool->layout().num_layers; ++layer) {
      if (absl::Status s = WriteTokens(id, tenant, layer, r->first_position, n); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  // PatternKv(1, ...) bytes for positions [at, at + n) of one layer.
  absl::Status WriteTokens(SequenceId id, TenantId tenant, uint32_t layer, uint32_t at, uint32_t n) {
    const KvLayout& l = pool->layout();
    return table->WriteKV(id, tenant, layer, at, n,
                          PatternKv(1, layer, l.num_kv_heads, at, n, l.token_bytes(), false),
                          PatternKv(1, layer, l.num_kv_heads, at, n, l.token_bytes(), true));
  }
  absl::Status Check() const {
    std::vector<PagePool*> pools = {pool.get()};
    return table->CheckInvariants(pools);
  }

  FakeClock clock;
  TenantLedger ledger;
  WorkerLeases leases;
  std::unique_ptr<PagePool> pool;
  std::unique_ptr<SequenceTable> table;
  std::atomic<int> transfers_changed{0};  // on_transfers_changed calls
};

}  // namespace kvwarden::testing
