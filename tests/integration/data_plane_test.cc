// The UCX data plane against a real kvwardend: put then get of random sequences over
// shared memory and TCP on loopback, page sizes 1/3/16 tokens, two tenants at once;
// bytes cross-checked against the gRPC byte path; every bad request with its code.

#include "kvwarden/data_plane.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvwarden/client.h"
#include "tests/support/admin_probe.h"
#include "tests/support/data_plane_env.h"
#include "tests/support/process.h"

namespace kvwarden {
namespace {

using client::DataPlane;
using client::PageRange;
using client::TransferMode;
using testing::Checksum;
using testing::DaemonProcess;
using testing::RandomBytes;

class DataPlaneTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::UseLoopbackUcx();
    auto d = DaemonProcess::Start(testing::kDataPlaneConfig);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = d->release();
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }

  std::unique_ptr<Client> Connect(const char* token) {
    return *Client::Connect({daemon_->target(), token, absl::Seconds(10)});
  }

  // Pool invariants from the outside: nothing pinned, nothing held once all is released.
  v1::PoolStats PoolStats(const std::string& pool) {
    return testing::AdminProbe(daemon_->target()).Pool(pool);
  }

  static DaemonProcess* daemon_;
};
DaemonProcess* DataPlaneTest::daemon_ = nullptr;

// One worker's round trip: a sequence of `tokens` random bytes put in one go, got back
// whole and in a second, unaligned sub-range; checked against gRPC ReadKV too.
void RoundTrip(Client& c, DataPlane& dp, uint64_t lease, const std::string& pool, uint32_t tokens,
               uint64_t seed) {
  auto seq = c.CreateSequence(lease, pool, tokens);
  ASSERT_TRUE(seq.ok()) << seq.status();
  ASSERT_TRUE(c.ReserveSlots(seq->id, tokens).ok());
  const client::Layout& l = seq->layout;
  const PageRange all{seq->id, 0, l.num_layers, 0, tokens};
  const std::vector<uint8_t> src = RandomBytes(client::RangeBytes(all, l), seed);
  ASSERT_TRUE(dp.Put(all, src).ok());

  std::vector<uint8_t> back(src.size(), 0);
  auto epoch = dp.Get(all, absl::MakeSpan(back));
  ASSERT_TRUE(epoch.ok()) << epoch.status();
  EXPECT_EQ(*epoch, 0u);
  ASSERT_EQ(Checksum(back.data(), back.size()), Checksum(src.data(), src.size()))
      << pool << " tokens=" << tokens;
  EXPECT_EQ(back, src);

  // The same bytes through the gRPC byte path: the page layout is the one contract.
  const uint32_t pages = client::RangePages(all, l);
  auto layers = c.ReadKV(seq->id, 0, l.num_layers, 0, tokens);
  ASSERT_TRUE(layers.ok()) << layers.status();
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    auto view = client::PageView::Contiguous(
        l, const_cast<uint8_t*>(src.data()) + size_t{layer} * pages * client::PageBytes(l), 0,
        pages);
    const client::LayerKv& kv = (*layers)[layer];
    for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
      for (uint32_t s = 0; s < tokens; ++s) {
        const size_t at = (size_t{h} * tokens + s) * l.token_bytes();
        ASSERT_EQ(0, memcmp(view.k(h, s), kv.k.data() + at, l.token_bytes())) << "layer " << layer;
        ASSERT_EQ(0, memcmp(view.v(h, s), kv.v.data() + at, l.token_bytes())) << "layer " << layer;
      }
    }
  }

  // A sub-range: layer 1 only, slots [tokens/3, tokens - 1), widened to whole pages.
  if (tokens >= 4) {
    const PageRange part{seq->id, 1, 1, tokens / 3, tokens - 1};
    std::vector<uint8_t> got(client::RangeBytes(part, l));
    ASSERT_TRUE(dp.Get(part, absl::MakeSpan(got)).ok());
    const size_t first_page = part.slot_start / l.page_tokens;
    const uint8_t* expect = src.data() + (size_t{1} * pages + first_page) * client::PageBytes(l);
    EXPECT_EQ(0, memcmp(got.data(), expect, got.size()));
  }
  auto freed = c.ReleaseSequence(seq->id);
  ASSERT_TRUE(freed.ok());
}

struct Case {
  std::string transports;
  std::string pool;
};

class DataPlaneRoundTrip : public DataPlaneTest, public ::testing::WithParamInterface<Case> {};

TEST_P(DataPlaneRoundTrip, PutThenGetReturnsTheBytes) {
  auto c = Connect("alpha-token");
  auto lease = c->RegisterWorker("rt", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease.ok());
  client::DataPlaneOptions opts;
  opts.pool = GetParam().pool;
  opts.transports = GetParam().transports;
  auto dp = DataPlane::Connect(c.get(), lease->id, opts);
  ASSERT_TRUE(dp.ok()) << dp.status();
  uint64_t seed = 1;
  for (uint32_t tokens : {1u, 5u, 47u, 300u})
    RoundTrip(*c, **dp, lease->id, GetParam().pool, tokens, seed++);
  const v1::PoolStats stats = PoolStats(GetParam().pool);
  EXPECT_EQ(stats.pinned_pages(), 0u);
  EXPECT_EQ((*dp)->reconnects(), 0u);
}

INSTANTIATE_TEST_SUITE_P(TransportsAndPageSizes, DataPlaneRoundTrip,
                         ::testing::Values(Case{"shm", "pt1"}, Case{"shm", "pt3"},
                                           Case{"shm", "pt16"}, Case{"tcp", "pt1"},
                                           Case{"tcp", "pt3"}, Case{"tcp", "pt16"}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.transports + "_" + info.param.pool;
                         });

TEST_F(DataPlaneTest, TwoTenantsConcurrently) {
  std::vector<std::thread> workers;
  std::atomic<int> failures{0};
  for (const char* token : {"alpha-token", "beta-token", "alpha-token", "beta-token"}) {
    workers.emplace_back([&, token, n = workers.size()] {
      auto c = Connect(token);
      auto lease = c->RegisterWorker(absl::StrCat("w", n), client::Role::kBoth, 60000);
      if (!lease.ok()) return (void)++failures;
      client::DataPlaneOptions opts;
      opts.pool = "pt16";
      opts.transports = n % 2 ? "tcp" : "shm";
      auto dp = DataPlane::Connect(c.get(), lease->id, opts);
      if (!dp.ok()) return (void)++failures;
      for (int i = 0; i < 5; ++i) RoundTrip(*c, **dp, lease->id, "pt16", 64 + 16 * i, 100 * n + i);
      if (::testing::Test::HasFailure()) ++failures;
    });
  }
  for (auto& t : workers) t.join();
  EXPECT_EQ(failures.load(), 0);
  const v1::PoolStats stats = PoolStats("pt16");
  EXPECT_EQ(stats.pinned_pages(), 0u);
  EXPECT_EQ(stats.used_pages(), 0u);
}

TEST_F(DataPlaneTest, BatchGivesEachRequestItsOwnStatus) {
  auto c = Connect("alpha-token");
  auto lease = c->RegisterWorker("batch", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease.ok());
  auto dp = DataPlane::Connect(c.get(), lease->id, {"pt3", "shm"});
  ASSERT_TRUE(dp.ok()) << dp.status();
  auto a = c->CreateSequence(lease->id, "pt3", 30);
  auto b = c->CreateSequence(lease->id, "pt3", 30);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(c->ReserveSlots(a->id, 30).ok());
  ASSERT_TRUE(c->ReserveSlots(b->id, 12).ok());
  const client::Layout& l = a->layout;
  const PageRange ra{a->id, 0, 3, 0, 30}, rb{b->id, 0, 3, 0, 12}, bad{b->id, 0, 3, 0, 30};
  auto da = RandomBytes(client::RangeBytes(ra, l), 7),
       db = RandomBytes(client::RangeBytes(rb, l), 8);
  std::vector<uint8_t> dbad(client::RangeBytes(bad, l));
  std::vector<client::TransferRequest> reqs(3);
  reqs[0] = {ra, TransferMode::kWrite, da.data()};
  reqs[1] = {bad, TransferMode::kWrite, dbad.data()};
  reqs[2] = {rb, TransferMode::kWrite, db.data()};
  (*dp)->Submit(absl::MakeSpan(reqs));
  EXPECT_TRUE(reqs[0].status.ok()) << reqs[0].status;
  EXPECT_EQ(reqs[1].status.code(), absl::StatusCode::kOutOfRange) << reqs[1].status;
  EXPECT_TRUE(reqs[2].status.ok()) << reqs[2].status;
  std::vector<uint8_t> back(da.size());
  ASSERT_TRUE((*dp)->Get(ra, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, da);
  back.assign(db.size(), 0);
  ASSERT_TRUE((*dp)->Get(rb, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, db);
  EXPECT_EQ(PoolStats("pt3").pinned_pages(), 0u);
}

TEST_F(DataPlaneTest, BadRequestsGetTheirExactErrorsAndLeakNothing) {
  auto alpha = Connect("alpha-token");
  auto beta = Connect("beta-token");
  auto la = alpha->RegisterWorker("a", client::Role::kBoth, 60000);
  auto lb = beta->RegisterWorker("b", client::Role::kBoth, 60000);
  ASSERT_TRUE(la.ok() && lb.ok());
  auto seq = alpha->CreateSequence(la->id, "pt16", 64);
  ASSERT_TRUE(seq.ok());
  ASSERT_TRUE(alpha->ReserveSlots(seq->id, 40).ok());

  // Pages outside the caller's sequence: past its slots, past its layers.
  auto past = alpha->BeginTransfer(la->id, {seq->id, 0, 3, 0, 41}, TransferMode::kRead);
  EXPECT_EQ(past.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(past.status().message(),
            absl::StrCat("slots [0, 41) of layer 0: sequence ", seq->id,
                         " holds 40 slots there (epoch 0); reserve first"));
  EXPECT_EQ(
      alpha->BeginTransfer(la->id, {seq->id, 2, 2, 0, 8}, TransferMode::kRead).status().code(),
      absl::StatusCode::kOutOfRange);
  EXPECT_EQ(
      alpha->BeginTransfer(la->id, {seq->id, 0, 0, 0, 8}, TransferMode::kRead).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      alpha->BeginTransfer(la->id, {seq->id, 0, 1, 8, 8}, TransferMode::kRead).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(alpha->BeginTransfer(la->id, {seq->id, 0, 1, 0, 8}, static_cast<TransferMode>(0))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(alpha->BeginTransfer(la->id, {seq->id, 0, 1, 0, 8}, TransferMode::kRead, 120000)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Another tenant's sequence looks like no sequence at all, and gets no key.
  auto stolen = beta->BeginTransfer(lb->id, {seq->id, 0, 1, 0, 8}, TransferMode::kRead);
  EXPECT_EQ(stolen.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(stolen.status().message(), absl::StrCat("sequence ", seq->id, " not found"));
  // Someone else's lease.
  EXPECT_EQ(beta->BeginTransfer(la->id, {seq->id, 0, 1, 0, 8}, TransferMode::kRead).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Ending someone else's transfer: NOT_FOUND, and the transfer stays.
  auto mine = alpha->BeginTransfer(la->id, {seq->id, 0, 1, 0, 8}, TransferMode::kRead);
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(beta->EndTransfer(mine->id).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(PoolStats("pt16").pinned_pages(), 1u);
  ASSERT_TRUE(alpha->EndTransfer(mine->id).ok());
  EXPECT_EQ(alpha->EndTransfer(mine->id).code(), absl::StatusCode::kNotFound);

  // Keys come only for the caller's chunks: beta's keys never name alpha's chunks.
  auto bseq = beta->CreateSequence(lb->id, "pt16", 64);
  ASSERT_TRUE(bseq.ok());
  ASSERT_TRUE(beta->ReserveSlots(bseq->id, 64).ok());
  auto ga = alpha->BeginTransfer(la->id, {seq->id, 0, 3, 0, 40}, TransferMode::kRead);
  auto gb = beta->BeginTransfer(lb->id, {bseq->id, 0, 3, 0, 64}, TransferMode::kRead);
  ASSERT_TRUE(ga.ok() && gb.ok());
  ASSERT_FALSE(gb->keys.empty());
  for (const auto& kb : gb->keys) {
    for (const auto& ka : ga->keys) {
      EXPECT_NE(kb.chunk, ka.chunk);
      EXPECT_NE(kb.remote_address, ka.remote_address);
    }
  }
  ASSERT_TRUE(alpha->EndTransfer(ga->id).ok());
  ASSERT_TRUE(beta->EndTransfer(gb->id).ok());

  // Client-side checks: wrong buffer size, pages outside a held transfer, writing a
  // transfer begun for reading.
  auto dp = DataPlane::Connect(alpha.get(), la->id, {"pt16", "shm"});
  ASSERT_TRUE(dp.ok()) << dp.status();
  std::vector<uint8_t> small(10);
  EXPECT_EQ((*dp)->Put({seq->id, 0, 3, 0, 40}, small).code(), absl::StatusCode::kInvalidArgument);
  auto t = (*dp)->Begin({seq->id, 0, 1, 0, 32}, TransferMode::kRead);
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<uint8_t> page((*dp)->page_bytes());
  EXPECT_EQ((*t)->ReadPages(0, 2, 1, page.data()).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*t)->ReadPages(1, 0, 1, page.data()).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*t)->WritePages(0, 0, 1, page.data()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*t)->ReadPages(0, 1, 1, page.data()).ok());
  EXPECT_TRUE((*t)->End().ok());
  EXPECT_EQ((*t)->ReadPages(0, 0, 1, page.data()).code(), absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(alpha->ReleaseSequence(seq->id).ok());
  ASSERT_TRUE(beta->ReleaseSequence(bseq->id).ok());
  const v1::PoolStats stats = PoolStats("pt16");
  EXPECT_EQ(stats.pinned_pages(), 0u);
  EXPECT_EQ(stats.used_pages(), 0u);
}

// Pools UCX cannot reach (GPU memory with Debian's UCX) move through per-transfer host
// staging buffers; stage_all_pools routes CPU pools the same way so the path runs here.
class StagedDataPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::UseLoopbackUcx();
    auto d = DaemonProcess::Start(std::string(testing::kDataPlaneConfig) +
                                  "data_plane { stage_all_pools: true }\n");
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    c_ = *Client::Connect({daemon_->target(), "alpha-token", absl::Seconds(10)});
    lease_ = c_->RegisterWorker("staged", client::Role::kBoth, 60000)->id;
  }
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<Client> c_;
  uint64_t lease_ = 0;
};

TEST_F(StagedDataPlaneTest, RoundTripsThroughStagingBuffers) {
  for (const char* tls : {"shm", "tcp"}) {
    for (const char* pool : {"pt3", "pt16"}) {
      auto dp = DataPlane::Connect(c_.get(), lease_, {pool, tls});
      ASSERT_TRUE(dp.ok()) << dp.status();
      RoundTrip(*c_, **dp, lease_, pool, 47, 5);
      RoundTrip(*c_, **dp, lease_, pool, 300, 6);
    }
  }
}

TEST_F(StagedDataPlaneTest, AWriteLandsWhenItsTransferEndsAndNotWhenItExpires) {
  client::DataPlaneOptions opts{"pt16", "shm"};
  opts.transfer_ttl_ms = 300;
  auto dp = DataPlane::Connect(c_.get(), lease_, opts);
  ASSERT_TRUE(dp.ok()) << dp.status();
  auto seq = c_->CreateSequence(lease_, "pt16", 64);
  ASSERT_TRUE(seq.ok() && c_->ReserveSlots(seq->id, 64).ok());
  const PageRange all{seq->id, 0, 1, 0, 64};
  auto before = RandomBytes(client::RangeBytes(all, seq->layout), 31);
  ASSERT_TRUE((*dp)->Put(all, before).ok());
  const size_t pb = (*dp)->page_bytes();
  std::vector<uint8_t> page(pb, 0xC3);

  auto abandoned = (*dp)->Begin(all, TransferMode::kWrite);
  ASSERT_TRUE(abandoned.ok());
  ASSERT_TRUE((*abandoned)->WritePages(0, 1, 1, page.data()).ok());
  absl::SleepFor(absl::Milliseconds(700));  // TTL 300 ms, reaped every 20 ms
  EXPECT_EQ((*abandoned)->WritePages(0, 2, 1, page.data()).code(), absl::StatusCode::kAborted);
  EXPECT_EQ((*abandoned)->End().code(), absl::StatusCode::kAborted);
  std::vector<uint8_t> back(before.size());
  ASSERT_TRUE((*dp)->Get(all, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, before);  // nothing of the expired write landed

  auto done = (*dp)->Begin(all, TransferMode::kWrite);
  ASSERT_TRUE(done.ok());
  ASSERT_TRUE((*done)->WritePages(0, 1, 1, page.data()).ok());
  ASSERT_TRUE((*done)->End().ok());
  ASSERT_TRUE((*dp)->Get(all, absl::MakeSpan(back)).ok());
  std::memcpy(before.data() + pb, page.data(), pb);
  EXPECT_EQ(back, before);  // exactly the written page changed
}

// memfd chunks with UCX on (data_plane.memfd_chunks, or /dev/shm too small): UCX
// registers them and emulates RMA through the daemon's worker; attach passes memfds.
TEST(MemfdChunksTest, RmaIsEmulatedAndAttachPassesMemfds) {
  testing::UseLoopbackUcx();
  testing::TempDir dir;
  auto daemon = DaemonProcess::Start(std::string(testing::kDataPlaneConfig) +
                                         "data_plane { memfd_chunks: true }\n",
                                     {"--attach-socket=" + dir.path() + "/a.sock"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto c = *Client::Connect({(*daemon)->target(), "alpha-token", absl::Seconds(10)});
  auto lease = c->RegisterWorker("memfd", client::Role::kDecode, 60000);
  ASSERT_TRUE(lease.ok());
  for (const char* tls : {"shm", "tcp"}) {
    auto dp = DataPlane::Connect(c.get(), lease->id, {"pt3", tls});
    ASSERT_TRUE(dp.ok()) << dp.status();
    RoundTrip(*c, **dp, lease->id, "pt3", 47, 51);
  }
  auto dp = DataPlane::Connect(c.get(), lease->id, {"pt16", "shm"});
  ASSERT_TRUE(dp.ok());
  auto seq = c->CreateSequence(lease->id, "pt16", 64);
  ASSERT_TRUE(seq.ok() && c->ReserveSlots(seq->id, 64).ok());
  const PageRange r{seq->id, 0, 3, 0, 64};
  const auto bytes = RandomBytes(client::RangeBytes(r, seq->layout), 52);
  ASSERT_TRUE((*dp)->Put(r, bytes).ok());
  auto pool = client::AttachedPool::Attach(c.get(), lease->id, {"pt16"});
  ASSERT_TRUE(pool.ok()) << pool.status();
  auto m = (*pool)->Map(r);
  ASSERT_TRUE(m.ok()) << m.status();
  const size_t pb = client::PageBytes(seq->layout);
  for (uint32_t layer = 0; layer < 3; ++layer) {
    for (uint32_t p = 0; p < 4; ++p) {
      ASSERT_EQ(0, memcmp((*m)->page(layer, p), bytes.data() + (size_t{layer} * 4 + p) * pb, pb));
    }
  }
}

}  // namespace
}  // namespace kvwarden
