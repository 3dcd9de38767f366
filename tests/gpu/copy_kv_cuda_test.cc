// CopyKvCuda against CopyKvCpu, byte for byte, over odd sizes. Label gpu; skips when no
// device is visible (the CPU-only CI), runs on the device machine.

#include <cuda_runtime.h>

#include <algorithm>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/copy_kv.h"

namespace kvwarden::kernels {
namespace {

struct Case {
  uint32_t heads, head_dim, page_tokens, elem_bytes, num_pages;
};

// CUDA vs CPU, byte for byte, on the same random ranges.
TEST(CopyKvCudaTest, MatchesCpuReference) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  for (Case c : {Case{1, 1, 1, 2, 5}, Case{7, 3, 3, 2, 4}, Case{32, 64, 16, 2, 8}, Case{7, 128, 3, 2, 6}}) {
    PageGeometry g{c.heads, c.head_dim, c.page_tokens, c.elem_bytes};
    const size_t pb = g.page_bytes();
    std::vector<uint8_t> host_pages(pb * c.num_pages, 0);
    std::vector<uint8_t*> host_ptrs;
    for (uint32_t i = 0; i < c.num_pages; ++i) host_ptrs.push_back(host_pages.data() + i * pb);
    uint8_t* dev_arena = nullptr;
    ASSERT_EQ(cudaMalloc(&dev_arena, pb * c.num_pages), cudaSuccess);
    ASSERT_EQ(cudaMemset(dev_arena, 0, pb * c.num_pages), cudaSuccess);
    std::vector<uint8_t*> dev_ptrs_host;
    for (uint32_t i = 0; i < c.num_pages; ++i) dev_ptrs_host.push_back(dev_arena + i * pb);
    uint8_t** dev_ptrs = nullptr;
    cudaMalloc(&dev_ptrs, sizeof(uint8_t*) * c.num_pages);
    cudaMemcpy(dev_ptrs, dev_ptrs_host.data(), sizeof(uint8_t*) * c.num_pages, cudaMemcpyHostToDevice);
    const uint32_t cap = c.num_pages * c.page_tokens;
    std::vector<uint32_t> begin(c.heads), count(c.heads);
    size_t total = 0;
    for (uint32_t h = 0; h < c.heads; ++h) {
      begin[h] = std::uniform_int_distribution<uint32_t>(0, cap - 1)(rng);
      count[h] = std::uniform_int_distribution<uint32_t>(0, cap - begin[h])(rng);
      total += count[h];
    }
    // At least one token so the dense buffers are never null when every count drew 0.
    std::vector<uint8_t> k(std::max<size_t>(total, 1) * g.token_bytes()), v(k.size());
    for (auto& b : k) b = static_cast<uint8_t>(rng());
    for (auto& b : v) b = static_cast<uint8_t>(rng());
    ASSERT_EQ(CopyKvCpu(PagedLayerView{g, host_ptrs.data(), c.num_pages}, {begin.data(), count.data()},
                        CopyDirection::kDenseToPages, k.data(), v.data()), KernelStatus::kOk);
    uint32_t *db = nullptr, *dc = nullptr;
    uint8_t *dk = nullptr, *dv = nullptr;
    cudaMalloc(&db, 4 * c.heads);
    cudaMalloc(&dc, 4 * c.heads);
    cudaMalloc(&dk, k.size() + 16);
    cudaMalloc(&dv, v.size() + 16);
    cudaMemcpy(db, begin.data(), 4 * c.heads, cudaMemcpyHostToDevice);
    cudaMemcpy(dc, count.data(), 4 * c.heads, cudaMemcpyHostToDevice);
    cudaMemcpy(dk, k.data(), k.size(), cudaMemcpyHostToDevice);
    cudaMemcpy(dv, v.data(), v.size(), cudaMemcpyHostToDevice);
    // The full grid, and the grid sized by the largest count (fewer blocks stride further).
    const uint32_t max_count = *std::max_element(count.begin(), count.end());
    for (uint32_t hint : {0u, max_count}) {
      ASSERT_EQ(cudaMemset(dev_arena, 0, pb * c.num_pages), cudaSuccess);
      ASSERT_EQ(CopyKvCuda(PagedLayerView{g, dev_ptrs, c.num_pages}, {db, dc},
                           CopyDirection::kDenseToPages, dk, dv, nullptr, hint),
                KernelStatus::kOk);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<uint8_t> from_gpu(host_pages.size());
      cudaMemcpy(from_gpu.data(), dev_arena, from_gpu.size(), cudaMemcpyDeviceToHost);
      EXPECT_EQ(from_gpu, host_pages) << "max_count hint " << hint;
    }
    // And back: pages -> dense, the direction ReadKV and staging use, against the CPU
    // kernel reading the same pages (the device pages now hold what the CPU wrote).
    std::vector<uint8_t> k_cpu(k.size(), 0), v_cpu(v.size(), 0);
    ASSERT_EQ(CopyKvCpu(PagedLayerView{g, host_ptrs.data(), c.num_pages}, {begin.data(), count.data()},
                        CopyDirection::kPagesToDense, k_cpu.data(), v_cpu.data()),
              KernelStatus::kOk);
    for (uint32_t hint : {0u, max_count}) {
      ASSERT_EQ(cudaMemset(dk, 0, k.size()), cudaSuccess);
      ASSERT_EQ(cudaMemset(dv, 0, v.size()), cudaSuccess);
      ASSERT_EQ(CopyKvCuda(PagedLayerView{g, dev_ptrs, c.num_pages}, {db, dc},
                           CopyDirection::kPagesToDense, dk, dv, nullptr, hint),
                KernelStatus::kOk);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<uint8_t> k_gpu(k.size()), v_gpu(v.size());
      cudaMemcpy(k_gpu.data(), dk, k_gpu.size(), cudaMemcpyDeviceToHost);
      cudaMemcpy(v_gpu.data(), dv, v_gpu.size(), cudaMemcpyDeviceToHost);
      EXPECT_EQ(k_gpu, k_cpu) << "pages to dense, max_count hint " << hint;
      EXPECT_EQ(v_gpu, v_cpu) << "pages to dense, max_count hint " << hint;
    }
    cudaFree(db); cudaFree(dc); cudaFree(dk); cudaFree(dv); cudaFree(dev_ptrs); cudaFree(dev_arena);
  }
}

}  // namespace
}  // namespace kvwarden::kernels
