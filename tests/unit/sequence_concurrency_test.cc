// Many threads drive one SequenceTable at once — create, reserve, write, read, fork,
// stats (scissorhands), release, memory-pressure relief — and the pool,
// ledger and table invariants hold afterwards. Runs in the ASan+UBSan build too.
// (ThreadSanitizer needs an Abseil built with it: Debian's libabsl is not instrumented,
// so TSan cannot see absl::Mutex and reports every guarded access.)

#include <atomic>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "cache_service/retention/scissorhands/scissorhands_policy.h"
#include "tests/support/core_fixture.h"
#include "tests/support/kv_pattern.h"

namespace kvwarden {
namespace {

using testing::Core;
using testing::CoreConfig;
using testing::PatternKv;

TEST(SequenceConcurrencyTest, ConcurrentWorkersKeepTheInvariants) {
  CoreConfig cfg;
  cfg.layout = KvLayout{2, 2, 8, DType::kFp16, 4};
  cfg.chunk_pages = 16;
  cfg.num_chunks = 32;  // 512 pages: tight enough for pressure relief and refusals
  cfg.alpha_quota_pages = 400;
  cfg.beta_quota_pages = 200;
  Core core(cfg);
  std::atomic<int> ok_ops{0};
  auto worker = [&](int t) {
    std::mt19937 rng(1000 + t);
    const TenantId tenant = t % 2;
    const LeaseId lease = core.Lease(tenant);
    const KvLayout& l = core.pool->layout();
    for (int round = 0; round < 60; ++round) {
      RetentionPolicy policy;
      const bool scissorhands = rng() % 2;
      if (scissorhands) policy = MakeScissorhandsPolicy({12, 8, 2, 0, 0}, {12});
      auto id = core.table->Create({tenant, lease, core.pool.get(), 64, policy});
      if (!id.ok()) continue;
      uint32_t n = 0;
      for (int step = 0; step < 8; ++step) {
        auto r = core.table->Reserve(*id, tenant, 1 + rng() % 4);
        if (!r.ok()) break;
        n = r->first_position + r->num_tokens;
        for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
          (void)core.table->WriteKV(*id, tenant, layer, r->first_position, r->num_tokens,
                                    PatternKv(*id, layer, l.num_kv_heads, r->first_position, r->num_tokens, l.token_bytes(), false),
                                    PatternKv(*id, layer, l.num_kv_heads, r->first_position, r->num_tokens, l.token_bytes(), true));
        }
        if (scissorhands) {
          auto snap = core.table->Describe(*id, Caller::Tenant(tenant), false, true);
          if (!snap.ok()) break;
          StatsBatch b;
          b.epoch = snap->epoch;
          DecodeStepStats s;
          for (uint32_t lh = 0; lh < l.num_layers * l.num_kv_heads; ++lh) {
            const uint32_t live = snap->heads[lh].live_slots;
            s.heads.push_back({lh / l.num_kv_heads, lh % l.num_kv_heads, live, {live ? live - 1 : 0}, {}});
            if (live == 0) s.heads.back().listed.clear();
          }
          b.steps.push_back(s);
          (void)core.table->ApplyStats(*id, tenant, b);
        }
        (void)core.table->ReadKV(*id, Caller::Tenant(tenant), rng() % l.num_layers, 0, n, std::nullopt);
      }
      if (rng() % 3 == 0) {
        auto fork = core.table->Fork(*id, tenant, lease);
        if (fork.ok()) (void)core.table->Release(fork->id, tenant);
      }
      if (core.table->Release(*id, tenant).ok()) ++ok_ops;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) threads.emplace_back(worker, t);
  // Meanwhile: admin reads and pressure relief from another thread.
  std::thread admin([&] {
    for (int i = 0; i < 200; ++i) {
      (void)core.table->List(std::nullopt, "");
      core.table->RelievePressure(core.pool.get(), 8, 0);
    }
  });
  for (auto& t : threads) t.join();
  admin.join();
  EXPECT_GT(ok_ops.load(), 100);
  EXPECT_TRUE(core.Check().ok()) << core.Check();
  EXPECT_EQ(core.ledger.Usage(0).pages + core.ledger.Usage(1).pages, 0u);
  EXPECT_EQ(core.pool->used_pages(), 0u);
}

}  // namespace
}  // namespace kvwarden
