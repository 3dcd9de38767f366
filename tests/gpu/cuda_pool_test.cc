// A cuda:0 pool driven through SequenceTable exactly like a cpu pool: KV writes and
// reads, forks and Scissorhands compaction must leave byte-identical results on both.
// Label gpu: skips when no CUDA device is visible.

#include "gtest/gtest.h"
#include "tests/support/core_fixture.h"
#include "tests/support/kv_pattern.h"

namespace kvwarden {
namespace {

using testing::Core;
using testing::CoreConfig;
using testing::PatternKv;

struct PoolRun {
  std::vector<std::string> layers_k;
  std::vector<std::vector<uint32_t>> positions;
};

PoolRun Drive(Core& core) {
  const KvLayout& l = core.pool->layout();
  RetentionPolicy p;
  p.kind = PolicyKind::kScissorhands;
  p.scissorhands = {12, 8, 2, 4, 0};
  p.layer_budgets.assign(l.num_layers, 12);
  SequenceId id = *core.table->Create({0, core.Lease(0), core.pool.get(), 200, p});
  EXPECT_TRUE(core.table->Reserve(id, 0, 30).ok());
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    EXPECT_TRUE(core.table->WriteKv(id, 0, layer, 0, 30,
                                    PatternKv(3, layer, l.num_kv_heads, 0, 30, l.token_bytes(), false),
                                    PatternKv(3, layer, l.num_kv_heads, 0, 30, l.token_bytes(), true))
                    .ok());
  }
  auto fork = core.table->Fork(id, 0, core.Lease(0));
  EXPECT_TRUE(fork.ok());
  StatsBatch b;
  DecodeStepStats step;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
      HeadStepStats hs{layer, h, 30, {}, {}};
      for (uint32_t j = 0; j < 30; j += 3 + h) hs.listed.push_back(j);
      step.heads.push_back(hs);
    }
  }
  b.steps.push_back(step);
  EXPECT_TRUE(core.table->ApplyStats(fork->id, 0, b).ok());
  PoolRun run;
  for (SequenceId s : {id, fork->id}) {
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      auto slice = core.table->ReadKv(s, Caller::Admin(), layer, 0, 30, std::nullopt);
      EXPECT_TRUE(slice.ok()) << slice.status();
      run.layers_k.push_back(slice->k + slice->v);
      run.positions.push_back(slice->positions);
    }
  }
  EXPECT_TRUE(core.Check().ok()) << core.Check();
  return run;
}

TEST(CudaPoolTest, MatchesACpuPoolByteForByte) {
  auto device = CudaPoolDevice(0);
  if (!device.ok()) GTEST_SKIP() << device.status();
  CoreConfig cpu_cfg;
  cpu_cfg.layout = KvLayout{3, 7, 16, DType::kFp16, 3};
  cpu_cfg.chunk_pages = 32;
  cpu_cfg.num_chunks = 8;
  CoreConfig gpu_cfg = cpu_cfg;
  gpu_cfg.device = *device;
  Core cpu(cpu_cfg), gpu(gpu_cfg);
  EXPECT_EQ(gpu.pool->device(), "cuda:0");
  const PoolRun a = Drive(cpu), b = Drive(gpu);
  EXPECT_EQ(a.positions, b.positions);
  EXPECT_EQ(a.layers_k, b.layers_k);
}

// The README promises fresh memory when a chunk changes tenant: on a cuda pool the
// chunk is zeroed (cudaMemset) before the next tenant's first page of it is handed out.
TEST(CudaPoolTest, ChunkHandedToAnotherTenantIsZeroed) {
  auto device = CudaPoolDevice(0);
  if (!device.ok()) GTEST_SKIP() << device.status();
  CoreConfig cfg;
  cfg.num_chunks = 1;  // both tenants must use the one chunk
  cfg.device = *device;
  Core core(cfg);
  const KvLayout& l = core.pool->layout();
  SequenceId a = *core.table->Create({0, core.Lease(0), core.pool.get(), 8, {}});
  ASSERT_TRUE(core.table->Reserve(a, 0, 8).ok());
  const std::string k(size_t{l.num_kv_heads} * 8 * l.token_bytes(), '\x5a');
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    ASSERT_TRUE(core.table->WriteKv(a, 0, layer, 0, 8, k, k).ok());
  }
  ASSERT_TRUE(core.table->Release(a, 0).ok());
  SequenceId b = *core.table->Create({1, core.Lease(1), core.pool.get(), 8, {}});
  ASSERT_TRUE(core.table->Reserve(b, 1, 8).ok());
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    auto slice = core.table->ReadKv(b, Caller::Tenant(1), layer, 0, 8, std::nullopt);
    ASSERT_TRUE(slice.ok()) << slice.status();
    EXPECT_EQ(slice->k, std::string(k.size(), '\0')) << "layer " << layer;
    EXPECT_EQ(slice->v, std::string(k.size(), '\0')) << "layer " << layer;
  }
}

}  // namespace
}  // namespace kvwarden
