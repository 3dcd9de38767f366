#include "cache_service/core/memory/page_pool.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kvwarden {
namespace {

using ::testing::HasSubstr;

struct Freed {
  TenantId tenant;
  uint64_t pages;
};

class PagePoolTest : public ::testing::Test {
 protected:
  // `chunk_factory` empty: the device's default chunks (memfd).
  std::unique_ptr<PagePool> MakePool(uint32_t chunk_pages, uint32_t num_chunks,
                                     ChunkFactory chunk_factory = {}) {
    PagePoolOptions opts;
    opts.name = "t";
    opts.layout = KvLayout{1, 2, 8, DType::kFp32, 4};
    opts.chunk_pages = chunk_pages;
    opts.num_chunks = num_chunks;
    opts.chunk_factory = std::move(chunk_factory);
    opts.on_pages_freed = [this](TenantId t, uint64_t n, uint64_t) { freed_.push_back({t, n}); };
    auto pool = PagePool::Create(std::move(opts));
    EXPECT_TRUE(pool.ok()) << pool.status();
    return *std::move(pool);
  }
  std::vector<Freed> freed_;
};

TEST_F(PagePoolTest, AllocatesFromTheTenantsOwnChunksOnly) {
  auto pool = MakePool(4, 4);
  std::vector<PageId> a, b;
  ASSERT_TRUE(pool->Allocate(0, 5, &a).ok());
  ASSERT_TRUE(pool->Allocate(1, 3, &b).ok());
  for (PageId p : a) EXPECT_EQ(pool->OwnerOf(p), 0u);
  for (PageId p : b) EXPECT_EQ(pool->OwnerOf(p), 1u);
  // Tenant 0 holds 2 chunks (5 pages), tenant 1 one chunk: pages never share a chunk.
  for (PageId pa : a) {
    for (PageId pb : b) EXPECT_NE(pa / 4, pb / 4);
  }
  PagePoolStats s = pool->Stats();
  EXPECT_EQ(s.used_pages, 8u);
  EXPECT_EQ(s.chunks_unowned, 1u);
  ASSERT_EQ(s.tenants.size(), 2u);
  EXPECT_EQ(s.tenants[0].chunks, 2u);
  EXPECT_EQ(s.tenants[0].pages, 5u);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST_F(PagePoolTest, RefusalChangesNothing) {
  auto pool = MakePool(4, 2);
  std::vector<PageId> a;
  ASSERT_TRUE(pool->Allocate(0, 5, &a).ok());
  std::vector<PageId> b;
  absl::Status s = pool->Allocate(1, 4, &b);  // no unowned chunk left
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("pool 't' is full"));
  // Only the caller's own numbers: tenant 1 holds nothing and learns nothing of tenant 0.
  EXPECT_EQ(s.message(), "pool 't' is full: 4 pages asked, none left for this tenant beyond the 0 pages it holds here");
  EXPECT_TRUE(b.empty());
  s = pool->Allocate(0, 4, &a);  // tenant 0 has only 3 free in its own chunk
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "pool 't' is full: 4 pages asked, none left for this tenant beyond the 5 pages it holds here");
  EXPECT_EQ(a.size(), 5u);
  EXPECT_EQ(pool->Stats().used_pages, 5u);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST_F(PagePoolTest, EmptyChunkReturnsAndIsScrubbedForAnotherTenant) {
  auto pool = MakePool(2, 1);
  std::vector<PageId> a;
  ASSERT_TRUE(pool->Allocate(0, 2, &a).ok());
  std::memset(pool->PageData(a[0]), 0xAB, pool->page_bytes());
  pool->Unref(a);
  ASSERT_EQ(freed_.size(), 1u);
  EXPECT_EQ(freed_[0].tenant, 0u);
  EXPECT_EQ(freed_[0].pages, 2u);
  EXPECT_EQ(pool->Stats().chunks_unowned, 1u);
  std::vector<PageId> b;
  ASSERT_TRUE(pool->Allocate(1, 2, &b).ok());
  for (PageId p : b) {
    const uint8_t* d = pool->PageData(p);
    for (size_t i = 0; i < pool->page_bytes(); ++i) ASSERT_EQ(d[i], 0) << "tenant 0's byte leaked";
  }
}

TEST_F(PagePoolTest, PinnedPageIsFreedOnlyAfterUnpin) {
  auto pool = MakePool(4, 1);
  std::vector<PageId> a;
  ASSERT_TRUE(pool->Allocate(0, 1, &a).ok());
  pool->Pin(a);
  EXPECT_EQ(pool->Unref(a), 0u);
  EXPECT_TRUE(freed_.empty());
  PagePoolStats s = pool->Stats();
  EXPECT_EQ(s.used_pages, 1u);
  EXPECT_EQ(s.orphan_pinned_pages, 1u);
  EXPECT_TRUE(pool->CheckInvariants().ok());
  pool->Unpin(a);
  ASSERT_EQ(freed_.size(), 1u);
  EXPECT_EQ(pool->Stats().used_pages, 0u);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST_F(PagePoolTest, SharedPageLivesUntilLastOwnerLetsGo) {
  auto pool = MakePool(4, 1);
  std::vector<PageId> a;
  ASSERT_TRUE(pool->Allocate(0, 1, &a).ok());
  pool->Ref(a);
  EXPECT_EQ(pool->RefCount(a[0]), 2u);
  EXPECT_EQ(pool->Stats().shared_pages, 1u);
  EXPECT_EQ(pool->Unref(a), 0u);
  EXPECT_EQ(pool->Unref(a), 1u);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

TEST_F(PagePoolTest, ChunkFactoryFailureIsReported) {
  PagePoolOptions opts;
  opts.name = "bad";
  opts.layout = KvLayout{1, 1, 1, DType::kFp16, 1};
  opts.chunk_pages = 1;
  opts.num_chunks = 2;
  opts.chunk_factory = [](size_t, size_t index) -> absl::StatusOr<std::unique_ptr<ChunkMemory>> {
    if (index == 1) return absl::ResourceExhaustedError("no memory");
    return CreateMemfdChunk("ok", 4096);
  };
  // Made at Create when asked to preallocate: the pool does not start.
  PagePoolOptions eager = opts;
  eager.preallocate = true;
  auto refused = PagePool::Create(std::move(eager));
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("pool 'bad' chunk 1: no memory"));
  // Made at first claim (the default): the claim fails and the call changes nothing.
  auto pool = PagePool::Create(std::move(opts));
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::vector<PageId> pages;
  absl::Status s = (*pool)->Allocate(0, 2, &pages);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("pool 'bad' chunk 1: no memory"));
  EXPECT_TRUE(pages.empty());
  EXPECT_EQ((*pool)->Stats().used_pages, 0u);
  EXPECT_TRUE((*pool)->CheckInvariants().ok()) << (*pool)->CheckInvariants();
  ASSERT_TRUE((*pool)->Allocate(0, 1, &pages).ok());  // chunk 0 was made and works
}

TEST_F(PagePoolTest, ChunksAreMadeAtTheirFirstClaim) {
  std::atomic<int> made{0};
  PagePoolOptions opts;
  opts.name = "lazy";
  opts.layout = KvLayout{1, 1, 1, DType::kFp16, 1};
  opts.chunk_pages = 4;
  opts.num_chunks = 1000;
  opts.chunk_factory = [&made](size_t bytes, size_t) -> absl::StatusOr<std::unique_ptr<ChunkMemory>> {
    ++made;
    return CreateMemfdChunk("lazy", bytes);
  };
  auto pool = PagePool::Create(std::move(opts));
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ(made.load(), 0);
  std::vector<PageId> pages;
  ASSERT_TRUE((*pool)->Allocate(0, 6, &pages).ok());
  EXPECT_EQ(made.load(), 2);
  (*pool)->Unref(pages);
  ASSERT_TRUE((*pool)->Allocate(1, 4, &pages).ok());  // a made chunk is reused (renewed), not made again
  EXPECT_EQ(made.load(), 2);
}

TEST_F(PagePoolTest, SharedChunkFdsNeverReachTheNextTenantsBytes) {
  auto pool = MakePool(4, 1);  // one chunk: the second tenant must get the same one
  std::vector<PageId> a;
  ASSERT_TRUE(pool->Allocate(0, 2, &a).ok());
  std::memset(pool->PageData(a[0]), 0xAA, pool->page_bytes());
  auto shares = pool->ShareTenantChunks(0, /*read_only=*/true);
  ASSERT_TRUE(shares.ok()) << shares.status();
  ASSERT_EQ(shares->size(), 1u);
  const PagePool::ChunkShare old = (*shares)[0];
  ASSERT_GE(old.fd, 0);
  // Read-only by construction: the fd cannot back a writable shared mapping.
  EXPECT_EQ(mmap(nullptr, pool->chunk_bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, old.fd, 0),
            MAP_FAILED);
  EXPECT_EQ(errno, EACCES);
  auto* seen = static_cast<uint8_t*>(mmap(nullptr, pool->chunk_bytes(), PROT_READ, MAP_SHARED, old.fd, 0));
  ASSERT_NE(seen, MAP_FAILED);
  EXPECT_EQ(seen[0], 0xAA);
  // Nor can it be reopened for writing through /proc/self/fd (issue 24, finding 8): the
  // file is owner read-only (root ignores that; a worker does not run as root).
  struct stat st {};
  ASSERT_EQ(fstat(old.fd, &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0400u);
  if (geteuid() != 0) {
    EXPECT_LT(open(absl::StrCat("/proc/self/fd/", old.fd).c_str(), O_RDWR | O_CLOEXEC), 0);
    EXPECT_EQ(errno, EACCES);
  }
  // A read-write share still maps writable (a dup of the daemon's read-write fd).
  auto rw = pool->ShareTenantChunks(0, /*read_only=*/false);
  ASSERT_TRUE(rw.ok()) << rw.status();
  void* w = mmap(nullptr, pool->chunk_bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, (*rw)[0].fd, 0);
  ASSERT_NE(w, MAP_FAILED);
  munmap(w, pool->chunk_bytes());
  close((*rw)[0].fd);
  // Beta shares nothing of alpha's.
  EXPECT_TRUE(pool->ShareTenantChunks(1, /*read_only=*/false)->empty());

  uint8_t* const address = pool->ChunkData(0);
  pool->Unref(a);
  std::vector<PageId> b;
  ASSERT_TRUE(pool->Allocate(1, 1, &b).ok());
  EXPECT_EQ(pool->ChunkData(0), address);  // same addresses ...
  EXPECT_EQ(pool->PageData(b[0])[0], 0);   // ... fresh zeroed memory
  std::memset(pool->PageData(b[0]), 0xBB, pool->page_bytes());
  EXPECT_EQ(pool->ChunkState(0).first, old.generation + 1);
  EXPECT_EQ(pool->ChunkState(0).second, 1u);
  // Alpha's old mapping still shows alpha's bytes, never beta's.
  EXPECT_EQ(seen[0], 0xAA);
  munmap(seen, pool->chunk_bytes());
  close(old.fd);
  EXPECT_TRUE(pool->CheckInvariants().ok());
}

// Memory whose shared handle, like a legacy CUDA IPC handle, keeps reaching it after
// Renew (cuda chunks; this test runs without a device). The pool under test is real.
class UnrevokableChunk final : public ChunkMemory {
 public:
  explicit UnrevokableChunk(size_t bytes) : bytes_(bytes, 0) {}
  uint8_t* data() const override { return const_cast<uint8_t*>(bytes_.data()); }
  size_t size() const override { return bytes_.size(); }
  absl::Status Renew() override {
    std::fill(bytes_.begin(), bytes_.end(), 0);
    return absl::OkStatus();
  }
  std::string ipc_handle() const override { return "handle"; }
  bool RenewRevokesSharing() const override { return false; }

 private:
  std::vector<uint8_t> bytes_;
};

// A chunk shared with a handle Renew cannot revoke stays with the tenant it was shared
// with: another tenant never claims it (its pages would be readable through the old
// handle), the first tenant gets it back. Chunks never shared move between tenants.
TEST_F(PagePoolTest, AChunkSharedBeyondRevocationStaysWithItsTenant) {
  auto made =
      MakePool(4, 2, [](size_t bytes, size_t) -> absl::StatusOr<std::unique_ptr<ChunkMemory>> {
        return std::unique_ptr<ChunkMemory>(new UnrevokableChunk(bytes));
      });
  ASSERT_NE(made, nullptr);
  PagePool& pool = *made;

  std::vector<PageId> a;
  ASSERT_TRUE(pool.Allocate(0, 2, &a).ok());
  const uint32_t shared_chunk = pool.ChunkOf(a[0]);
  auto shares = pool.ShareTenantChunks(0, /*read_only=*/false);
  ASSERT_TRUE(shares.ok()) << shares.status();
  ASSERT_EQ(shares->size(), 1u);
  EXPECT_EQ((*shares)[0].ipc_handle, "handle");
  pool.Unref(a);
  EXPECT_EQ(pool.ChunkState(shared_chunk).second, kNoTenant);
  EXPECT_EQ(pool.Stats().chunks_bound, 1u);
  ASSERT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();

  // Tenant 1 gets only the other chunk: asking for both chunks' pages is refused whole.
  std::vector<PageId> b;
  const absl::Status refused = pool.Allocate(1, 8, &b);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_TRUE(b.empty());
  ASSERT_TRUE(pool.Allocate(1, 4, &b).ok());
  for (PageId p : b) EXPECT_NE(pool.ChunkOf(p), shared_chunk);
  std::vector<PageId> more;
  EXPECT_EQ(pool.Allocate(1, 1, &more).code(), absl::StatusCode::kResourceExhausted);

  // Tenant 0 claims its chunk again, not renewed (nobody else held it).
  const uint64_t generation = pool.ChunkState(shared_chunk).first;
  ASSERT_TRUE(pool.Allocate(0, 1, &a).ok());
  EXPECT_EQ(pool.ChunkOf(a.back()), shared_chunk);
  EXPECT_EQ(pool.ChunkState(shared_chunk).first, generation);

  // The never-shared chunk still moves: tenant 1 releases it and tenant 0 takes it
  // (3 pages fill its own chunk, the 4th claims the other).
  const uint32_t other_chunk = 1 - shared_chunk;
  pool.Unref(b);
  std::vector<PageId> c;
  ASSERT_TRUE(pool.Allocate(0, 4, &c).ok());
  EXPECT_EQ(pool.ChunkState(other_chunk).second, 0u);
  EXPECT_TRUE(pool.CheckInvariants().ok()) << pool.CheckInvariants();
}

}  // namespace
}  // namespace kvwarden
