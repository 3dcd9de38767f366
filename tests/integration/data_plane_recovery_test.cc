// The data plane when things go wrong, against real processes: a client killed with
// kill -9 mid-transfer, a daemon restarted under a connected client, eviction and
// release requested while a transfer holds the pages, remote keys gone stale when a
// chunk changed hands, and kvwctl's view of transfers.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvwarden/client.h"
#include "kvwarden/data_plane.h"
#include "tests/support/admin_probe.h"
#include "tests/support/data_plane_env.h"
#include "tests/support/process.h"

namespace kvwarden {
namespace {

using client::DataPlane;
using client::PageRange;
using client::TransferMode;
using testing::DaemonProcess;
using ::testing::HasSubstr;
using testing::RandomBytes;

// A free port below the kernel's ephemeral range, so no client socket of a test running
// alongside is handed it between this probe and the daemon's bind (or its restart).
int FreePort() {
  std::ifstream range_file("/proc/sys/net/ipv4/ip_local_port_range");
  int ephemeral_low = 32768, ephemeral_high = 60999;
  range_file >> ephemeral_low >> ephemeral_high;
  std::mt19937 rng(std::random_device{}());
  const int low = std::max(1024, ephemeral_low - 12000);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int port = std::uniform_int_distribution<int>(low, ephemeral_low - 1)(rng);
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    const bool free = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    close(fd);
    if (free) return port;
  }
  return 0;
}

using Admin = testing::AdminProbe;

class DataPlaneRecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::UseLoopbackUcx();
    port_ = FreePort();
    ASSERT_NE(port_, 0) << "no free port below the ephemeral range";
    auto d = DaemonProcess::Start(testing::kDataPlaneConfig, {}, Target());
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
  }
  std::string Target() const { return absl::StrCat("127.0.0.1:", port_); }

  int port_ = 0;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(DataPlaneRecoveryTest, AClientKilledMidTransferLeavesNoPinAfterItsLeaseTtl) {
  Admin admin(Target());
  auto holder = testing::SpawnWithStdoutPipe({testing::BinPath("kvw_transfer_holder"), Target(),
                                              "alpha-token", "pt16", "300", "200", "shm"});
  ASSERT_GT(holder.pid, 0);
  const std::string ready = testing::ReadLine(holder.stdout_fd);
  ASSERT_EQ(ready.rfind("READY ", 0), 0u) << "holder said: " << ready;
  auto listed = admin.Transfers();
  ASSERT_EQ(listed.transfers_size(), 1);
  EXPECT_EQ(listed.transfers(0).mode(), "write");
  EXPECT_EQ(listed.transfers(0).pinned_pages(), 3u * 13);  // 200 slots = 13 pages x 3 layers
  EXPECT_EQ(admin.Pool("pt16").pinned_pages(), 39u);
  // kvwctl shows it.
  auto out = testing::RunCommand(
      {testing::BinPath("kvwctl"), "--target=" + Target(), "--token=test-admin", "transfers"});
  EXPECT_EQ(out.exit_code, 0) << out.err;
  EXPECT_THAT(out.out, HasSubstr("alpha"));
  EXPECT_THAT(out.out, HasSubstr("write"));

  const absl::Time killed = absl::Now();
  ASSERT_EQ(kill(holder.pid, SIGKILL), 0);
  waitpid(holder.pid, nullptr, 0);
  close(holder.stdout_fd);
  // Lease TTL 300 ms (the transfer's own TTL is 60 s): the lease's end ends it.
  while (absl::Now() - killed < absl::Seconds(10) && admin.Transfers().transfers_size() > 0) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  const absl::Duration took = absl::Now() - killed;
  EXPECT_EQ(admin.Transfers().transfers_size(), 0);
  EXPECT_LT(took, absl::Seconds(3));
  const v1::PoolStats stats = admin.Pool("pt16");
  EXPECT_EQ(stats.pinned_pages(), 0u);
  EXPECT_EQ(stats.used_pages(), 0u);  // its sequence went with its lease
}

class DaemonRestart : public DataPlaneRecoveryTest,
                      public ::testing::WithParamInterface<std::string> {};

TEST_P(DaemonRestart, AConnectedClientRecoversWithoutBeingRebuilt) {
  auto c = *Client::Connect({Target(), "alpha-token", absl::Seconds(5)});
  auto lease = c->RegisterWorker("survivor", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease.ok());
  client::DataPlaneOptions opts;
  opts.pool = "pt3";
  opts.transports = GetParam();
  opts.op_timeout = absl::Seconds(20);
  auto dp = DataPlane::Connect(c.get(), lease->id, opts);
  ASSERT_TRUE(dp.ok()) << dp.status();
  auto seq = c->CreateSequence(lease->id, "pt3", 64);
  ASSERT_TRUE(seq.ok() && c->ReserveSlots(seq->id, 64).ok());
  const PageRange r{seq->id, 0, 3, 0, 64};
  const auto bytes = RandomBytes(client::RangeBytes(r, seq->layout), 3);
  ASSERT_TRUE((*dp)->Put(r, bytes).ok());

  // Crash the daemon and bring a new one up on the same address a little later. (The
  // daemon is started from this thread: PR_SET_PDEATHSIG follows the forking thread.)
  daemon_->Kill();
  std::vector<uint8_t> back(bytes.size());
  auto pending =
      std::async(std::launch::async, [&] { return (*dp)->Get(r, absl::MakeSpan(back)); });
  absl::SleepFor(absl::Milliseconds(300));
  auto restarted = DaemonProcess::Start(testing::kDataPlaneConfig, {}, Target());
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  daemon_ = *std::move(restarted);
  // The old sequence cannot survive; the error says why, after riding out the outage.
  auto got = pending.get();
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr("kvwardend restarted"));
  EXPECT_EQ((*dp)->reconnects(), 1u);

  // Same Client, same DataPlane: a new lease and sequence just work.
  auto lease2 = c->RegisterWorker("survivor", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease2.ok()) << lease2.status();
  (*dp)->SetLease(lease2->id);
  auto seq2 = c->CreateSequence(lease2->id, "pt3", 64);
  ASSERT_TRUE(seq2.ok() && c->ReserveSlots(seq2->id, 64).ok());
  const PageRange r2{seq2->id, 0, 3, 0, 64};
  ASSERT_TRUE((*dp)->Put(r2, bytes).ok());
  ASSERT_TRUE((*dp)->Get(r2, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, bytes);
  EXPECT_EQ((*dp)->reconnects(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Transports, DaemonRestart, ::testing::Values("shm", "tcp"));

TEST_F(DataPlaneRecoveryTest, AnEndpointErrorFailsTheHeldTransferAndTheNextRequestReconnects) {
  auto c = *Client::Connect({Target(), "alpha-token", absl::Seconds(5)});
  auto lease = c->RegisterWorker("w", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease.ok());
  client::DataPlaneOptions opts{"pt16", "tcp"};
  opts.op_timeout = absl::Seconds(5);
  auto dp = DataPlane::Connect(c.get(), lease->id, opts);
  ASSERT_TRUE(dp.ok()) << dp.status();
  auto seq = c->CreateSequence(lease->id, "pt16", 64);
  ASSERT_TRUE(seq.ok() && c->ReserveSlots(seq->id, 64).ok());
  const PageRange r{seq->id, 0, 3, 0, 64};
  const auto bytes = RandomBytes(client::RangeBytes(r, seq->layout), 41);
  ASSERT_TRUE((*dp)->Put(r, bytes).ok());
  auto t = (*dp)->Begin(r, TransferMode::kRead);
  ASSERT_TRUE(t.ok());

  daemon_->Kill();  // the TCP endpoint's peer is gone mid-transfer
  std::vector<uint8_t> page((*dp)->page_bytes());
  const absl::Time start = absl::Now();
  const absl::Status broken = (*t)->ReadPages(0, 0, 1, page.data());
  EXPECT_EQ(broken.code(), absl::StatusCode::kUnavailable) << broken;
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
  t->reset();

  auto restarted = DaemonProcess::Start(testing::kDataPlaneConfig, {}, Target());
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  daemon_ = *std::move(restarted);
  auto lease2 = c->RegisterWorker("w", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease2.ok()) << lease2.status();
  (*dp)->SetLease(lease2->id);
  auto seq2 = c->CreateSequence(lease2->id, "pt16", 64);
  ASSERT_TRUE(seq2.ok() && c->ReserveSlots(seq2->id, 64).ok());
  const PageRange r2{seq2->id, 0, 3, 0, 64};
  ASSERT_TRUE((*dp)->Put(r2, bytes).ok());
  std::vector<uint8_t> back(bytes.size());
  ASSERT_TRUE((*dp)->Get(r2, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, bytes);
  EXPECT_EQ((*dp)->reconnects(), 1u);
}

TEST_F(DataPlaneRecoveryTest, EvictionWaitsForTheTransferWhichMovesPreEvictionBytes) {
  auto c = *Client::Connect({Target(), "alpha-token", absl::Seconds(10)});
  auto lease = c->RegisterWorker("decoder", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease.ok());
  auto dp = DataPlane::Connect(c.get(), lease->id, {"pt1", "shm"});
  ASSERT_TRUE(dp.ok()) << dp.status();
  client::Policy p = client::Policy::Scissorhands(8);
  p.window = 2;
  p.recent = 1;
  p.drop = 4;
  auto seq = c->CreateSequence(lease->id, "pt1", 64, p);
  ASSERT_TRUE(seq.ok()) << seq.status();
  ASSERT_TRUE(c->ReserveSlots(seq->id, 10).ok());
  const client::Layout& l = seq->layout;
  const PageRange all{seq->id, 0, l.num_layers, 0, 10};
  const auto bytes = RandomBytes(client::RangeBytes(all, l), 11);
  ASSERT_TRUE((*dp)->Put(all, bytes).ok());

  auto t = (*dp)->Begin(all, TransferMode::kRead);
  ASSERT_TRUE(t.ok()) << t.status();
  // Ten slots over a budget of 8: one step of statistics evicts. It must wait.
  client::DecodeStep step;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    for (uint32_t h = 0; h < l.num_kv_heads; ++h) step.heads.push_back({layer, h, 10, {0, 9}, {}});
  }
  auto stream = *c->OpenStatsStream();
  auto pending = std::async(std::launch::async, [&] {
    return stream->SendSteps(seq->id, 0, {step, step});
  });
  EXPECT_EQ(pending.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
  std::vector<uint8_t> during(bytes.size());
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    ASSERT_TRUE(
        (*t)->ReadPages(layer, 0, 10, during.data() + layer * 10 * (*dp)->page_bytes()).ok());
  }
  EXPECT_EQ(during, bytes);  // the pre-eviction bytes, all ten slots
  ASSERT_TRUE((*t)->End().ok());
  auto update = pending.get();
  ASSERT_TRUE(update.ok()) << update.status();
  EXPECT_EQ(update->epoch, 1u);
  ASSERT_FALSE(update->heads.empty());
  EXPECT_LT(update->heads[0].live_slots, 10u);
  (void)stream->Close();
}

TEST_F(DataPlaneRecoveryTest, ReleaseUnderATransferFreesThePagesWhenItEnds) {
  Admin admin(Target());
  auto c = *Client::Connect({Target(), "alpha-token", absl::Seconds(10)});
  auto lease = c->RegisterWorker("w", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease.ok());
  auto dp = DataPlane::Connect(c.get(), lease->id, {"pt16", "tcp"});
  ASSERT_TRUE(dp.ok()) << dp.status();
  auto seq = c->CreateSequence(lease->id, "pt16", 64);
  ASSERT_TRUE(seq.ok() && c->ReserveSlots(seq->id, 64).ok());
  const PageRange all{seq->id, 0, 3, 0, 64};
  const auto bytes = RandomBytes(client::RangeBytes(all, seq->layout), 12);
  ASSERT_TRUE((*dp)->Put(all, bytes).ok());
  auto t = (*dp)->Begin(all, TransferMode::kRead);
  ASSERT_TRUE(t.ok());
  auto freed = c->ReleaseSequence(seq->id);
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(*freed, 0u);  // every page is pinned
  EXPECT_EQ(admin.Pool("pt16").used_pages(), 12u);
  std::vector<uint8_t> back(bytes.size());
  for (uint32_t layer = 0; layer < 3; ++layer) {
    ASSERT_TRUE((*t)->ReadPages(layer, 0, 4, back.data() + layer * 4 * (*dp)->page_bytes()).ok());
  }
  EXPECT_EQ(back, bytes);
  ASSERT_TRUE((*t)->End().ok());
  EXPECT_EQ(admin.Pool("pt16").used_pages(), 0u);
  EXPECT_EQ(admin.Pool("pt16").pinned_pages(), 0u);
}

TEST_F(DataPlaneRecoveryTest, KeysOfAChunkThatChangedHandsAreNeverReused) {
  Admin admin(Target());
  auto alpha = *Client::Connect({Target(), "alpha-token", absl::Seconds(10)});
  auto beta = *Client::Connect({Target(), "beta-token", absl::Seconds(10)});
  auto la = alpha->RegisterWorker("a", client::Role::kBoth, 60000);
  auto lb = beta->RegisterWorker("b", client::Role::kBoth, 60000);
  ASSERT_TRUE(la.ok() && lb.ok());
  auto dp = DataPlane::Connect(alpha.get(), la->id, {"pt16", "shm"});
  ASSERT_TRUE(dp.ok());
  // Pool pt16 has 4 KiB pages in 64 KiB chunks: 16 pages a chunk.
  auto fill = [&](Client& c, uint64_t lease, uint32_t tokens) {
    auto s = c.CreateSequence(lease, "pt16", tokens);
    EXPECT_TRUE(s.ok() && c.ReserveSlots(s->id, tokens).ok());
    return s->id;
  };
  const uint64_t a1 = fill(*alpha, la->id, 80);  // 5 pages x 3 layers: one chunk
  const PageRange r1{a1, 0, 3, 0, 80};
  auto bytes = RandomBytes(client::RangeBytes(r1, (*dp)->layout()), 21);
  ASSERT_TRUE((*dp)->Put(r1, bytes).ok());  // caches the key of alpha's chunk
  auto g = alpha->BeginTransfer(la->id, r1, TransferMode::kRead);
  ASSERT_TRUE(g.ok());
  const client::ChunkRef alpha_chunk = g->chunks[0];
  ASSERT_TRUE(alpha->EndTransfer(g->id).ok());
  ASSERT_TRUE(alpha->ReleaseSequence(a1).ok());
  // Every chunk of the pool goes to beta once (claimed in turn), then back to the pool.
  std::vector<uint64_t> bs;
  for (int i = 0; i < 4; ++i) bs.push_back(fill(*beta, lb->id, 80));
  // Released newest first, so the chunk alpha had is the next one handed out.
  for (auto it = bs.rbegin(); it != bs.rend(); ++it) ASSERT_TRUE(beta->ReleaseSequence(*it).ok());
  // Alpha again, possibly on its old chunk with a new generation: the cached key of the
  // old generation must not be used (the grant names the new generation).
  const uint64_t a2 = fill(*alpha, la->id, 80);
  const PageRange r2{a2, 0, 3, 0, 80};
  bytes = RandomBytes(bytes.size(), 22);
  ASSERT_TRUE((*dp)->Put(r2, bytes).ok());
  std::vector<uint8_t> back(bytes.size());
  ASSERT_TRUE((*dp)->Get(r2, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, bytes);
  auto g2 = alpha->BeginTransfer(la->id, r2, TransferMode::kRead);
  ASSERT_TRUE(g2.ok());
  ASSERT_EQ(g2->chunks.size(), 1u);
  EXPECT_EQ(g2->chunks[0].chunk, alpha_chunk.chunk);  // the same chunk ...
  EXPECT_EQ(g2->chunks[0].generation,
            alpha_chunk.generation + 2);  // ... renewed for beta, then alpha
  ASSERT_TRUE(alpha->EndTransfer(g2->id).ok());
  EXPECT_EQ(admin.Pool("pt16").pinned_pages(), 0u);
}

}  // namespace
}  // namespace kvwarden
