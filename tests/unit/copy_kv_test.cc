// CopyKvCpu against a naive per-element reference, with out-of-bounds sentinels, over odd
// sizes. tests/gpu/copy_kv_cuda_test.cc compares CopyKvCuda with it.

#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/copy_kv.h"


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

  std::mt19937 rng_{static_cast<std::mt19937::result_type>(::testing::UnitTest::GetInstance()->random_seed())};
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
  // +1: a zero-slot draw still passes real (non-null) buffers.
  std::vector<uint8_t> k(total * tb + 1), v(total * tb + 1);
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
  k2.back() = k.back();
  v2.back() = v.back();
  ASSERT_EQ(CopyKvCpu(view_, {begin.data(), count.data()}, CopyDirection::kPagesToDense, k2.data(), v2.data()),
            KernelStatus::kOk);
  EXPECT_EQ(k2, k);
  EXPECT_EQ(v2, v);
}

// Checked whole first (HeadRangesFit): the heads before the bad one copy nothing either.
TEST_P(CopyKvTest, RangeBeyondThePagesIsRefused) {
  std::vector<uint32_t> begin(GetParam().heads, 0), count(GetParam().heads, 1);
  count.back() = GetParam().num_pages * GetParam().page_tokens + 1;
  std::vector<uint8_t> buf((GetParam().heads + count.back()) * geo_.token_bytes(), 0xEE);
  const std::vector<uint8_t> before = buf;
  EXPECT_EQ(CopyKvCpu(view_, {begin.data(), count.data()}, CopyDirection::kPagesToDense, buf.data(), buf.data()),
            KernelStatus::kInvalidArgument);
  EXPECT_EQ(buf, before);
  EXPECT_FALSE(HeadRangesFit(geo_, GetParam().num_pages, {begin.data(), count.data()}));
  count.back() = 1;
  EXPECT_TRUE(HeadRangesFit(geo_, GetParam().num_pages, {begin.data(), count.data()}));
}

INSTANTIATE_TEST_SUITE_P(OddSizes, CopyKvTest,
                         ::testing::Values(Case{1, 1, 1, 2, 5}, Case{7, 3, 3, 2, 4},
                                           Case{1, 64, 16, 2, 3}, Case{32, 8, 16, 4, 2},
                                           Case{7, 128, 3, 2, 6}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           const Case& c = info.param;
                           return "heads" + std::to_string(c.heads) + "_dim" + std::to_string(c.head_dim) +
                                  "_pt" + std::to_string(c.page_tokens) + "_elem" +
                                  std::to_string(c.elem_bytes) + "_pages" + std::to_string(c.num_pages);
                         });


}  // namespace
}  // namespace kvwarden::kernels
