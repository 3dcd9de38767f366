// CopyKvCpu against a naive per-element reference, with out-of-bounds sentinels, over odd
// sizes; and CopyKvCuda against CopyKvCpu when a GPU is present (label gpu, else skipped).

#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/copy_kv.h"

#if defined(KVW_HAVE_CUDA)
#include <cuda_runtime.h>
#endif

namespace kvwarden::kernels {
namespace {

constexpr uint8_t kSentinel = 0xCD;

struct Case {
  uint32_t heads, head_dim, page_tokens, elem_bytes, num_pages;
};

class CopyKvTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const Case& c = GetParam();
    geo_ = PageGeometry{c.heads, c.head_dim, c.page_tokens, c.elem_bytes};
    // Pages live apart inside one buffer with sentinel gaps, in shuffled order.
    const size_t stride = geo_.page_bytes() + 64;
    arena_.assign(stride * c.num_pages + 64, kSentinel);
    std::vector<uint32_t> order(c.num_pages);
    for (uint32_t i = 0; i < c.num_pages; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng_);
    for (uint32_t i = 0; i < c.num_pages; ++i) ptrs_.push_back(arena_.data() + 64 + order[i] * stride);
    view_ = PagedLayerView{geo_, ptrs_.data(), c.num_pages};
  }

  std::mt19937 rng_{::testing::UnitTest::GetInstance()->random_seed()};
  PageGeometry geo_;
  std::vector<uint8_t> arena_;
  std::vector<uint8_t*> ptrs_;
  PagedLayerView view_;
};

TEST_P(CopyKvTest, MatchesNaiveIndexingAndStaysInBounds) {
  const Case& c = GetParam();
  const uint32_t cap = c.num_pages * c.page_tokens;
  std::vector<uint32_t> begin(c.heads), count(c.heads);
  size_t total = 0;
  for (uint32_t h = 0; h < c.heads; ++h) {
    begin[h] = std::uniform_int_distribution<uint32_t>(0, cap - 1)(rng_);
    count[h] = std::uniform_int_distribution<uint32_t>(0, cap - begin[h])(rng_);
    total += count[h];
  }
  const size_t tb = geo_.token_bytes();
  std::vector<uint8_t> k(total * tb), v(total * tb);
  for (auto& b : k) b = static_cast<uint8_t>(rng_());
  for (auto& b : v) b = static_cast<uint8_t>(rng_());
  ASSERT_EQ(CopyKvCpu(view_, {begin.data(), count.data()}, CopyDirection::kDenseToPages, k.data(), v.data()),
            KernelStatus::kOk);
  // Naive check: every copied element is where PageGeometry says it is.
  size_t off = 0;
  std::vector<bool> touched(arena_.size(), false);
  for (uint32_t h = 0; h < c.heads; ++h) {
    for (uint32_t i = 0; i < count[h]; ++i, off += tb) {
      const uint32_t s = begin[h] + i;
      for (size_t b = 0; b < tb; ++b) {
        ASSERT_EQ(view_.k(h, s)[b], k[off + b]);
        ASSERT_EQ(view_.v(h, s)[b], v[off + b]);
        touched[view_.k(h, s) + b - arena_.data()] = true;
        touched[view_.v(h, s) + b - arena_.data()] = true;
      }
    }
  }
  for (size_t i = 0; i < arena_.size(); ++i) {
    if (!touched[i]) ASSERT_EQ(arena_[i], kSentinel) << "byte " << i << " written out of range";
  }
  std::vector<uint8_t> k2(k.size()), v2(v.size());
  ASSERT_EQ(CopyKvCpu(view_, {begin.data(), count.data()}, CopyDirection::kPagesToDense, k2.data(), v2.data()),
            KernelStatus::kOk);
  EXPECT_EQ(k2, k);
  EXPECT_EQ(v2, v);
}

TEST_P(CopyKvTest, RangeBeyondThePagesIsRefused) {
  std::vector<uint32_t> begin(GetParam().heads, 0), count(GetParam().heads, 0);
  count.back() = GetParam().num_pages * GetParam().page_tokens + 1;
  std::vector<uint8_t> buf(count.back() * geo_.token_bytes());
  EXPECT_EQ(CopyKvCpu(view_, {begin.data(), count.data()}, CopyDirection::kPagesToDense, buf.data(), buf.data()),
            KernelStatus::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(OddSizes, CopyKvTest,
                         ::testing::Values(Case{1, 1, 1, 2, 5}, Case{7, 3, 3, 2, 4},
                                           Case{1, 64, 16, 2, 3}, Case{32, 8, 16, 4, 2},
                                           Case{7, 128, 3, 2, 6}));

#if defined(KVW_HAVE_CUDA)
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
    std::vector<uint8_t> k(total * g.token_bytes()), v(k.size());
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
    ASSERT_EQ(CopyKvCuda(PagedLayerView{g, dev_ptrs, c.num_pages}, {db, dc}, CopyDirection::kDenseToPages,
                         dk, dv, nullptr), KernelStatus::kOk);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint8_t> from_gpu(host_pages.size());
    cudaMemcpy(from_gpu.data(), dev_arena, from_gpu.size(), cudaMemcpyDeviceToHost);
    EXPECT_EQ(from_gpu, host_pages);
    cudaFree(db); cudaFree(dc); cudaFree(dk); cudaFree(dv); cudaFree(dev_ptrs); cudaFree(dev_arena);
  }
}
#endif

}  // namespace
}  // namespace kvwarden::kernels
