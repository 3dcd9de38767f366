// TransferLeases, the book of live transfer leases: per-tenant counts, ids, who may end
// one, what the data path finds, and page runs.

#include "cache_service/core/sequences/transfer_leases.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwarden {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TransferLeases::Record RecordOf(TransferLeases& book, TenantId tenant, uint8_t secret_byte) {
  TransferLeases::Record r;
  r.info.id = book.NewId();
  r.info.tenant = tenant;
  r.secret.fill(secret_byte);
  return r;
}

TEST(TransferLeasesTest, CountsPerTenantAndEndsOnlyWhatTheCallerMaySee) {
  TransferLeases book;
  TransferLeases::Record a = RecordOf(book, 1, 7);
  const TransferId a_id = a.info.id;
  book.Add(std::move(a));
  book.Add(RecordOf(book, 1, 8));
  book.Add(RecordOf(book, 2, 9));
  EXPECT_EQ(book.CountOf(1), 2u);
  EXPECT_EQ(book.CountOf(2), 1u);
  EXPECT_EQ(book.CountOf(3), 0u);
  // Another tenant's id answers exactly as an id that never existed.
  auto other = book.Take(a_id, Caller::Tenant(2));
  ASSERT_EQ(other.status().code(), absl::StatusCode::kNotFound);
  auto never = book.Take(a_id ^ 1, Caller::Tenant(2));
  EXPECT_EQ(other.status().message(), absl::StrCat("transfer ", a_id, " not found"));
  EXPECT_EQ(never.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(book.CountOf(1), 2u);
  auto mine = book.Take(a_id, Caller::Tenant(1));
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(mine->info.id, a_id);
  EXPECT_EQ(book.CountOf(1), 1u);
  // The admin ends any; TakeWhere keeps the counts.
  std::vector<TransferLeases::Record> taken =
      book.TakeWhere([](const TransferLeases::Record& r) { return r.info.tenant == 2; });
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(book.CountOf(2), 0u);
  EXPECT_EQ(book.List(std::nullopt).size(), 1u);
}

TEST(TransferLeasesTest, TheDataPathNeedsTheSecretAndCannotTellWhichWasWrong) {
  TransferLeases book;
  TransferLeases::Record r = RecordOf(book, 1, 5);
  const TransferId id = r.info.id;
  net::DataSecret right = r.secret, wrong = r.secret;
  wrong[15] ^= 1;
  book.Add(std::move(r));
  auto found = book.Find(id, right);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ((*found)->info.id, id);
  auto bad_secret = book.Find(id, wrong);
  auto bad_id = book.Find(id + 1, right);
  EXPECT_EQ(bad_secret.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(bad_secret.status().message(), HasSubstr("not found (or a wrong secret)"));
  EXPECT_EQ(bad_id.status().code(), absl::StatusCode::kNotFound);
}

TEST(TransferLeasesTest, ListsByIdAndPerTenant) {
  TransferLeases book;
  std::vector<TransferId> ids;
  for (TenantId t : {1u, 2u, 1u, 1u}) {
    TransferLeases::Record r = RecordOf(book, t, 1);
    ids.push_back(r.info.id);
    book.Add(std::move(r));
  }
  std::vector<TransferInfo> all = book.List(std::nullopt);
  ASSERT_EQ(all.size(), 4u);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].id, all[i].id);
  EXPECT_EQ(book.List(1).size(), 3u);
  EXPECT_EQ(book.List(2).size(), 1u);
  EXPECT_TRUE(book.List(3).empty());
}

TEST(TransferLeasesTest, PageRunsJoinPagesThatFollowInOneChunk) {
  PagePoolOptions opts;
  opts.name = "t";
  opts.layout = KvLayout{1, 2, 8, DType::kFp32, 4};
  opts.chunk_pages = 4;
  opts.num_chunks = 2;
  auto pool = PagePool::Create(std::move(opts));
  ASSERT_TRUE(pool.ok()) << pool.status();
  const PagePool& p = **pool;
  std::vector<PageRun> runs;
  // Pages 1, 2 follow each other in chunk 0; 3 -> 5 skips; 5 is in chunk 1 (4 pages each).
  for (PageId page : {1u, 2u, 3u, 5u, 6u, 0u}) AppendPageRun(p, page, runs);
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].chunk, 0u);
  EXPECT_EQ(runs[0].offset, 1 * p.page_bytes());
  EXPECT_EQ(runs[0].pages, 3u);
  EXPECT_EQ(runs[1].chunk, 1u);
  EXPECT_EQ(runs[1].offset, 1 * p.page_bytes());
  EXPECT_EQ(runs[1].pages, 2u);
  EXPECT_EQ(runs[2].chunk, 0u);
  EXPECT_EQ(runs[2].pages, 1u);
}

}  // namespace
}  // namespace kvwarden
