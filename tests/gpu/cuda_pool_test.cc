// A cuda:0 pool driven through SequenceTable exactly like a cpu pool: KV writes and
// reads, forks and Scissorhands compaction must leave byte-identical results on both.
// Label gpu: skips when no CUDA device is visible.

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

#include "cache_service/retention/scissorhands/scissorhands_policy.h"
#include "cache_service/retention/scissorhands/scissorhands_rings_cuda.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/copy_kv.h"
#include "tests/support/core_fixture.h"
#include "tests/support/kv_pattern.h"
#include "tests/support/policy_examples.h"
#include "tests/support/policy_state_drive.h"

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
  RetentionPolicy p = MakeScissorhandsPolicy({12, 8, 2, 4, 0}, {12});
  SequenceId id = *core.table->Create({0, core.Lease(0), core.pool.get(), 200, p});
  EXPECT_TRUE(core.table->Reserve(id, 0, 30).ok());
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    EXPECT_TRUE(core.table->WriteKV(id, 0, layer, 0, 30,
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
      auto slice = core.table->ReadKV(s, Caller::Admin(), layer, 0, 30, std::nullopt);
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
  // Skip only where no device exists: with one, a pool that cannot start is a failure.
  if (!device.ok() && !kernels::CudaDeviceAvailable()) GTEST_SKIP() << device.status();
  ASSERT_TRUE(device.ok()) << device.status();
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
  // Skip only where no device exists: with one, a pool that cannot start is a failure.
  if (!device.ok() && !kernels::CudaDeviceAvailable()) GTEST_SKIP() << device.status();
  ASSERT_TRUE(device.ok()) << device.status();
  CoreConfig cfg;
  cfg.num_chunks = 1;  // both tenants must use the one chunk
  cfg.device = *device;
  Core core(cfg);
  const KvLayout& l = core.pool->layout();
  SequenceId a = *core.table->Create({0, core.Lease(0), core.pool.get(), 8, {}});
  ASSERT_TRUE(core.table->Reserve(a, 0, 8).ok());
  const std::string k(size_t{l.num_kv_heads} * 8 * l.token_bytes(), '\x5a');
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    ASSERT_TRUE(core.table->WriteKV(a, 0, layer, 0, 8, k, k).ok());
  }
  ASSERT_TRUE(core.table->Release(a, 0).ok());
  SequenceId b = *core.table->Create({1, core.Lease(1), core.pool.get(), 8, {}});
  ASSERT_TRUE(core.table->Reserve(b, 1, 8).ok());
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    auto slice = core.table->ReadKV(b, Caller::Tenant(1), layer, 0, 8, std::nullopt);
    ASSERT_TRUE(slice.ok()) << slice.status();
    EXPECT_EQ(slice->k, std::string(k.size(), '\0')) << "layer " << layer;
    EXPECT_EQ(slice->v, std::string(k.size(), '\0')) << "layer " << layer;
  }
}

// Stats of many sequences arriving at once on one device share launches (the record
// batcher) and every sequence's history still ends as on a cpu pool: same low counts,
// same evictions.
TEST(CudaPoolTest, ConcurrentRecordsOfManySequencesBatchAndMatchCpuRings) {
  if (!kernels::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  auto queue = CudaQueue::Create(0);
  ASSERT_TRUE(queue.ok()) << queue.status();
  auto batcher = std::make_shared<CudaRecordBatcher>(*queue);
  constexpr int kSequences = 12, kSteps = 150;
  constexpr uint32_t kHeads = 6, kWindow = 40, kLive = 300;
  std::vector<std::unique_ptr<ScissorhandsRings>> gpu, cpu;
  for (int i = 0; i < kSequences; ++i) {
    gpu.push_back(NewCudaScissorhandsRings(batcher, kHeads, kWindow));
    cpu.push_back(NewCpuScissorhandsRings(kHeads, kWindow));
    ASSERT_TRUE(gpu.back()->Reserve(kLive).ok());
    ASSERT_TRUE(cpu.back()->Reserve(kLive).ok());
  }
  std::atomic<uint64_t> messages{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kSequences; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937 rng(1000 + i);
      // Messages of 1 to 3 steps: the cpu rings fuse them, the cuda rings launch once per
      // message or share a launch with other sequences' messages.
      for (uint64_t step = 0; step < kSteps;) {
        const uint32_t steps =
            static_cast<uint32_t>(std::min<uint64_t>(1 + rng() % 3, kSteps - step));
        std::vector<uint32_t> live(kHeads, kLive), attended, offsets = {0}, ids;
        for (uint32_t s = 0; s < steps; ++s) {
          for (uint32_t h = 0; h < kHeads; ++h) {
            attended.push_back(kLive - rng() % 20);
            for (uint32_t j = 0; j < attended.back(); ++j) {
              if (rng() % (3 + h) == 0) ids.push_back(j);
            }
            offsets.push_back(static_cast<uint32_t>(ids.size()));
          }
        }
        const std::vector<kernels::ListedIds> listed = testing::ListedIdsOf(ids, offsets);
        EXPECT_TRUE(gpu[i]->Record(step, steps, live, attended, listed).ok());
        EXPECT_TRUE(cpu[i]->Record(step, steps, live, attended, listed).ok());
        step += steps;
        ++messages;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  // A message is one launch on its own; fewer launches than messages means sequences shared.
  EXPECT_LT(batcher->launches(), messages.load()) << "no two sequences ever shared a launch";
  kernels::ScissorhandsParams p{kLive - 50, kWindow, 4, 0, 2};
  for (int i = 0; i < kSequences; ++i) {
    for (uint32_t h = 0; h < kHeads; ++h) {
      std::vector<uint32_t> a, b;
      ASSERT_TRUE(gpu[i]->LowCounts(h, kLive, &a).ok());
      ASSERT_TRUE(cpu[i]->LowCounts(h, kLive, &b).ok());
      EXPECT_EQ(a, b) << "sequence " << i << " head " << h;
    }
    std::vector<uint8_t> keep_gpu, keep_cpu;
    ASSERT_TRUE(gpu[i]->Select(0, std::vector<uint32_t>(kHeads, kLive), p, &keep_gpu).ok());
    ASSERT_TRUE(cpu[i]->Select(0, std::vector<uint32_t>(kHeads, kLive), p, &keep_cpu).ok());
    EXPECT_EQ(keep_gpu, keep_cpu) << "sequence " << i;
  }
}

// WriteKV/ReadKV's device copy, staged through the queue arena (small) and through
// buffers of its own (K and V over the arena's 64 MiB): the pages end as the CPU kernel
// reads them, and the copy back returns what was written. A range past the pages is
// refused before anything runs.
// A Scissorhands state written out on a cuda pool reads back on a cpu pool (and back
// again) as the same history: the encoding does not depend on where the planes live.
TEST(CudaPoolTest, ScissorhandsStateMovesBetweenDeviceAndHostMemory) {
  if (!kernels::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  auto device = CudaPoolDevice(0);
  ASSERT_TRUE(device.ok()) << device.status();
  constexpr size_t kHeads = 5;
  const RetentionPolicy p = MakeScissorhandsPolicy({64, 40, 4, 0, 2}, {64});
  auto on_gpu = p.Strategy().NewState(p, kHeads, **device);
  ASSERT_TRUE(on_gpu.ok()) << on_gpu.status();
  testing::DriveScissorhandsState(static_cast<ScissorhandsState&>(**on_gpu), kHeads, 120, 30, 7);
  absl::StatusOr<std::string> bytes = (*on_gpu)->Encode();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto on_cpu = p.Strategy().DecodeState(p, kHeads, *CpuPoolDevice(), *bytes);
  ASSERT_TRUE(on_cpu.ok()) << on_cpu.status();
  EXPECT_EQ(*(*on_cpu)->Encode(), *bytes);
  auto back = p.Strategy().DecodeState(p, kHeads, **device, *(*on_cpu)->Encode());
  ASSERT_TRUE(back.ok()) << back.status();
  // Both go on the same way on their own devices.
  testing::DriveScissorhandsState(static_cast<ScissorhandsState&>(**back), kHeads, 80, 10, 8);
  testing::DriveScissorhandsState(static_cast<ScissorhandsState&>(**on_cpu), kHeads, 80, 10, 8);
  EXPECT_EQ(*(*back)->Encode(), *(*on_cpu)->Encode());
}

TEST(CudaPoolTest, CopyKvInAndOutOfTheStagingArenaMatchesTheCpuKernel) {
  auto device = CudaPoolDevice(0);
  // Skip only where no device exists: with one, a pool that cannot start is a failure.
  if (!device.ok() && !kernels::CudaDeviceAvailable()) GTEST_SKIP() << device.status();
  ASSERT_TRUE(device.ok()) << device.status();
  const kernels::PageGeometry g{8, 128, 16, 2};
  for (const uint32_t per_head : {37u, 20000u}) {  // 2 x 8 x 20000 x 256 bytes = 80 MiB
    SCOPED_TRACE(per_head);
    const uint32_t num_pages = (per_head + 40) / g.page_tokens + 1;
    auto chunk = (*device)->NewChunk("copy", size_t{num_pages} * g.page_bytes());
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    std::vector<uint8_t*> pages;
    for (uint32_t i = 0; i < num_pages; ++i)
      pages.push_back((*chunk)->data() + size_t{i} * g.page_bytes());
    std::vector<uint32_t> begin, count(g.num_kv_heads, per_head);
    for (uint32_t h = 0; h < g.num_kv_heads; ++h) begin.push_back(h * 5);  // heads start mid-page
    const size_t bytes = size_t{per_head} * g.num_kv_heads * g.token_bytes();
    std::mt19937 rng(per_head);
    std::vector<uint8_t> k(bytes), v(bytes);
    for (size_t i = 0; i < bytes; ++i)
      k[i] = static_cast<uint8_t>(rng()), v[i] = static_cast<uint8_t>(rng());
    ASSERT_TRUE((*device)
                    ->CopyKv(g, pages, begin, count, kernels::CopyDirection::kDenseToPages,
                             k.data(), v.data())
                    .ok());

    std::vector<uint8_t> k_back(bytes), v_back(bytes);
    ASSERT_TRUE((*device)
                    ->CopyKv(g, pages, begin, count, kernels::CopyDirection::kPagesToDense,
                             k_back.data(), v_back.data())
                    .ok());
    EXPECT_TRUE(k_back == k && v_back == v) << "copy back differs";

    // The same pages on the host, read by the CPU kernel.
    std::vector<uint8_t> host((*chunk)->size());
    ASSERT_TRUE((*device)->CopyToHost(host.data(), (*chunk)->data(), host.size()).ok());
    std::vector<uint8_t*> host_pages;
    for (uint32_t i = 0; i < num_pages; ++i)
      host_pages.push_back(host.data() + size_t{i} * g.page_bytes());
    std::vector<uint8_t> k_cpu(bytes), v_cpu(bytes);
    ASSERT_EQ(kernels::CopyKvCpu({g, host_pages.data(), num_pages}, {begin.data(), count.data()},
                                 kernels::CopyDirection::kPagesToDense, k_cpu.data(), v_cpu.data()),
              kernels::KernelStatus::kOk);
    EXPECT_TRUE(k_cpu == k && v_cpu == v)
        << "the device wrote another layout than the CPU kernel reads";

    std::vector<uint32_t> past = begin;
    past.back() = num_pages * g.page_tokens - per_head + 1;
    const absl::Status refused = (*device)->CopyKv(
        g, pages, past, count, kernels::CopyDirection::kDenseToPages, k.data(), v.data());
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
    std::vector<uint8_t> after((*chunk)->size());
    ASSERT_TRUE((*device)->CopyToHost(after.data(), (*chunk)->data(), after.size()).ok());
    EXPECT_TRUE(after == host) << "a refused copy changed the pages";
  }
}

}  // namespace
}  // namespace kvwarden

namespace kvwarden {
namespace {

// cuda:N for every visible N, not only 0: each device makes a chunk and moves bytes
// through it; the first number past the last device is refused (UNAVAILABLE naming it),
// never a pool on the wrong device. (On the CUDA emulator, ctest also runs this with
// two devices: cuda_pool_test_two_devices.)
TEST(CudaPoolTest, EveryVisibleOrdinalServesAndOnePastTheLastIsRefused) {
  if (!kernels::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  for (int d = 0; d < count; ++d) {
    auto device = CudaPoolDevice(d);
    ASSERT_TRUE(device.ok()) << "cuda:" << d << ": " << device.status();
    EXPECT_EQ((*device)->name(), absl::StrCat("cuda:", d));
    EXPECT_FALSE((*device)->pci_bus_id().empty());
    auto chunk = (*device)->NewChunk("probe", size_t{2} << 20);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    std::vector<uint8_t> in(size_t{1} << 20), out(in.size(), 0);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(i * 7 + d);
    // Into the chunk's second MiB and back.
    ASSERT_TRUE((*device)->CopyFromHost((*chunk)->data() + in.size(), in.data(), in.size()).ok());
    ASSERT_TRUE((*device)->CopyToHost(out.data(), (*chunk)->data() + in.size(), out.size()).ok());
    EXPECT_EQ(out, in) << "cuda:" << d;
  }
  auto past = CudaPoolDevice(count);
  EXPECT_EQ(past.status().code(), absl::StatusCode::kUnavailable) << past.status();
}

}  // namespace
}  // namespace kvwarden

namespace kvwarden {
namespace {

// Pages past the first 4 GiB of one allocation: K/V in and out at byte offsets that do not
// fit 32 bits, byte for byte against the CPU kernel on a host copy. (Not on the CUDA
// emulator: 4.5 GiB of emulated device memory is more than CI's machine should commit.)
TEST(CudaPoolTest, CopyKvAtByteOffsetsAboveFourGiB) {
#if defined(KVW_CUDA_EMULATOR)
  GTEST_SKIP() << "needs 4.5 GiB of device memory; runs on a real device (gpu_check)";
#endif
  if (!kernels::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  auto device = CudaPoolDevice(0);
  ASSERT_TRUE(device.ok()) << device.status();
  const kernels::PageGeometry g{8, 128, 16, 2};  // 64 KiB pages
  const size_t pb = g.page_bytes();
  auto chunk = (*device)->NewChunk("big", (size_t{9} << 29));  // 4.5 GiB
  ASSERT_TRUE(chunk.ok()) << chunk.status();
  uint8_t* base = (*chunk)->data();
  const std::vector<uint8_t*> pages = {base + (size_t{4} << 30) + pb, base + (size_t{4} << 30) + 3 * pb,
                                       base + pb};
  const uint32_t cap = static_cast<uint32_t>(pages.size()) * g.page_tokens;
  std::vector<uint32_t> begin(g.num_kv_heads), count(g.num_kv_heads);
  size_t total = 0;
  for (uint32_t h = 0; h < g.num_kv_heads; ++h) {
    begin[h] = h % 5;
    count[h] = cap - begin[h] - h;
    total += count[h];
  }
  std::vector<uint8_t> k(total * g.token_bytes()), v(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = static_cast<uint8_t>(i * 13 + 1);
    v[i] = static_cast<uint8_t>(i * 7 + 3);
  }
  ASSERT_TRUE((*device)->CopyKv(g, pages, begin, count, kernels::CopyDirection::kDenseToPages,
                                k.data(), v.data()).ok());
  // A host copy of each page, read back by the CPU kernel below: the layout must agree.
  std::vector<uint8_t> host(pages.size() * pb);
  for (size_t i = 0; i < pages.size(); ++i) {
    ASSERT_TRUE((*device)->CopyToHost(host.data() + i * pb, pages[i], pb).ok());
  }
  // Only the slots written are compared (the rest of device memory is not zeroed).
  std::vector<uint8_t> k_back(k.size()), v_back(v.size());
  ASSERT_TRUE((*device)->CopyKv(g, pages, begin, count, kernels::CopyDirection::kPagesToDense,
                                k_back.data(), v_back.data()).ok());
  EXPECT_EQ(k_back, k);
  EXPECT_EQ(v_back, v);
  std::vector<uint8_t> k_host(k.size()), v_host(v.size());
  std::vector<uint8_t*> host_pages;
  for (size_t i = 0; i < pages.size(); ++i) host_pages.push_back(host.data() + i * pb);
  ASSERT_EQ(kernels::CopyKvCpu({g, host_pages.data(), static_cast<uint32_t>(pages.size())},
                               {begin.data(), count.data()}, kernels::CopyDirection::kPagesToDense,
                               k_host.data(), v_host.data()),
            kernels::KernelStatus::kOk);
  EXPECT_EQ(k_host, k) << "the device pages' layout differs from the CPU kernel's";
  EXPECT_EQ(v_host, v);
}

}  // namespace
}  // namespace kvwarden
