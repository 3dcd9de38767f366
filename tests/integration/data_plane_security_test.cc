// The data plane as a hostile tenant sees it (issue: over UCX TCP a tenant could read and
// write any memory of the daemon). A real kvwardend on loopback; the attacks use a raw
// UCX context and raw sockets, as an attacker's own code would. Each checks the exact
// answer, that the daemon lives, and that the other tenant's bytes are untouched.

#include <netinet/in.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/fd/unique_fd.h"
#include "common/net/data_frames.h"
#include "common/ucx/ucx.h"
#include "gtest/gtest.h"
#include "kvwarden/client.h"
#include "kvwarden/data_plane.h"
#include "tests/support/data_plane_env.h"
#include "tests/support/loopback.h"
#include "tests/support/process.h"

namespace kvwarden {
namespace {

using client::DataPlane;
using client::PageRange;
using client::TransferMode;
using client::TransferPath;
using testing::DaemonProcess;
using testing::RandomBytes;

// Open fds of a process.
size_t OpenFds(pid_t pid) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

// "fds N, threads N, RSS N KiB" of a process, for the figures these attacks report.
std::string ProcessFigures(pid_t pid) {
  const size_t fds = OpenFds(pid);
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line, threads = "?", rss = "?";
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) threads = line.substr(line.find_first_not_of(" \t", 8));
    if (line.rfind("VmRSS:", 0) == 0) rss = line.substr(line.find_first_not_of(" \t", 6));
  }
  return absl::StrCat("fds ", fds, ", threads ", threads, ", RSS ", rss);
}

struct Answer {
  int code = -1;  // -1: the connection closed without an answer
  std::string message;
  std::vector<uint8_t> payload;
};

class DataPlaneSecurityTest : public ::testing::Test {
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

  void SetUp() override {
    alpha_ = *Client::Connect({daemon_->target(), "alpha-token", absl::Seconds(10)});
    beta_ = *Client::Connect({daemon_->target(), "beta-token", absl::Seconds(10)});
    alpha_lease_ = alpha_->RegisterWorker("attacker", client::Role::kBoth, 60000)->id;
    beta_lease_ = beta_->RegisterWorker("victim", client::Role::kBoth, 60000)->id;
    // The victim's KV, written over the TCP data path.
    auto seq = beta_->CreateSequence(beta_lease_, "pt16", 64);
    ASSERT_TRUE(seq.ok() && beta_->ReserveSlots(seq->id, 64).ok());
    victim_range_ = {seq->id, 0, 3, 0, 64};
    victim_bytes_ = RandomBytes(client::RangeBytes(victim_range_, seq->layout), 77);
    auto dp = DataPlane::Connect(beta_.get(), beta_lease_, {"pt16", "tcp"});
    ASSERT_TRUE(dp.ok()) << dp.status();
    ASSERT_TRUE((*dp)->Put(victim_range_, victim_bytes_).ok());
    auto info = alpha_->GetDataPlane("pt16");
    ASSERT_TRUE(info.ok());
    info_ = *info;
    ASSERT_NE(info_.tcp_data_port, 0);
  }

  // The victim's bytes as the victim reads them.
  void ExpectVictimIntact() {
    ASSERT_EQ(kill(daemon_->pid(), 0), 0) << "the daemon died";
    auto dp = DataPlane::Connect(beta_.get(), beta_lease_, {"pt16", "tcp"});
    ASSERT_TRUE(dp.ok()) << dp.status();
    std::vector<uint8_t> back(victim_bytes_.size());
    ASSERT_TRUE((*dp)->Get(victim_range_, absl::MakeSpan(back)).ok());
    EXPECT_EQ(back, victim_bytes_);
  }

  UniqueFd Dial() { return testing::ConnectLoopback(info_.tcp_data_port, absl::Seconds(10)); }

  static bool RecvAll(int fd, void* p, size_t n) {
    auto* b = static_cast<uint8_t*>(p);
    while (n > 0) {
      const ssize_t got = recv(fd, b, n, 0);
      if (got <= 0) return false;
      b += got;
      n -= static_cast<size_t>(got);
    }
    return true;
  }

  // One raw request (header as given, then `payload`) and its answer.
  static Answer Raw(int fd, const net::DataRequestHeader& h, const std::vector<uint8_t>& payload = {}) {
    std::string out(reinterpret_cast<const char*>(&h), sizeof(h));
    out.append(payload.begin(), payload.end());
    (void)!send(fd, out.data(), out.size(), MSG_NOSIGNAL);
    Answer a;
    net::DataResponseHeader r;
    if (!RecvAll(fd, &r, sizeof(r)) || r.magic != net::kDataResponseMagic) return a;
    a.message.resize(r.message_bytes);
    if (!RecvAll(fd, a.message.data(), a.message.size())) return a;
    a.payload.resize(r.payload_bytes);
    if (!RecvAll(fd, a.payload.data(), a.payload.size())) return a;
    a.code = static_cast<int>(r.code);
    return a;
  }

  static net::DataRequestHeader Header(const client::TransferGrant& g, net::DataOp op,
                                       uint32_t pages) {
    net::DataRequestHeader h;
    h.op = static_cast<uint16_t>(op);
    h.transfer_id = g.id;
    std::memcpy(h.secret.data(), g.data_secret.data(), std::min<size_t>(16, g.data_secret.size()));
    h.page_count = pages;
    h.payload_bytes = op == net::DataOp::kWrite ? uint64_t{pages} * g.page_bytes : 0;
    return h;
  }

  // A grant of the attacker's own (its sequence, pages 0..3 of each layer).
  client::TransferGrant OwnGrant(TransferMode mode, uint64_t sequence = 0) {
    if (sequence == 0) {
      auto seq = alpha_->CreateSequence(alpha_lease_, "pt16", 64);
      EXPECT_TRUE(seq.ok() && alpha_->ReserveSlots(seq->id, 64).ok());
      sequence = seq->id;
    }
    own_sequence_ = sequence;
    auto g = alpha_->BeginTransfer(alpha_lease_, {sequence, 0, 3, 0, 64}, mode, 0, {},
                                   TransferPath::kTcp);
    EXPECT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(g->data_secret.size(), 16u);
    EXPECT_TRUE(g->keys.empty()) << "the TCP path hands out no UCX keys";
    return *g;
  }

  static DaemonProcess* daemon_;
  std::unique_ptr<Client> alpha_, beta_;
  uint64_t alpha_lease_ = 0, beta_lease_ = 0;
  uint64_t own_sequence_ = 0;
  PageRange victim_range_;
  std::vector<uint8_t> victim_bytes_;
  client::DataPlaneInfo info_;
};
DaemonProcess* DataPlaneSecurityTest::daemon_ = nullptr;

// The attack of the issue: a tenant reaches the daemon's UCX worker over tcp, unpacks its
// rkey and aims RMA anywhere. The worker now runs shared memory only: no endpoint over
// tcp can even be made, and the daemon refuses to be configured otherwise.
TEST_F(DataPlaneSecurityTest, TheDaemonsUcxWorkerCannotBeReachedOverTcp) {
  ASSERT_FALSE(info_.ucx_worker_address.empty());
  auto ctx = ucx::Context::Create({"tcp"});
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  auto worker = ucx::Worker::Create(*ctx);
  ASSERT_TRUE(worker.ok());
  auto ep = ucx::Endpoint::Connect(*worker, info_.ucx_worker_address, /*peer_errors=*/true);
  EXPECT_FALSE(ep.ok()) << "an endpoint over tcp to the daemon's worker: " << ep->Describe();
  // A tcp grant names no keys at all.
  client::TransferGrant g = OwnGrant(TransferMode::kRead);
  EXPECT_TRUE(g.keys.empty());
  ASSERT_TRUE(alpha_->EndTransfer(g.id).ok());
  ExpectVictimIntact();
}

TEST(DataPlaneConfigSecurityTest, UcxTransportsThatDoNotBoundRmaAreRefused) {
  for (const char* tls : {"tcp", "cma", "posix,tcp", "all", "rc", "sysv"}) {
    auto d = DaemonProcess::Start(absl::StrCat(testing::kDataPlaneConfig,
                                               "data_plane { ucx_transports: \"", tls, "\" }\n"));
    EXPECT_FALSE(d.ok()) << tls;
    if (!d.ok()) EXPECT_NE(d.status().message().find("refused"), std::string::npos) << d.status();
  }
  EXPECT_EQ(*ucx::BoundedTransports(""), "posix,self");
  EXPECT_EQ(*ucx::BoundedTransports("shm,self"), "posix,self");
  EXPECT_FALSE(ucx::BoundedTransports("sysv").ok());
}

// Every way to name pages the grant does not cover gets its code, and nothing moves.
TEST_F(DataPlaneSecurityTest, TcpRequestsAreCheckedAgainstTheGrant) {
  client::TransferGrant mine = OwnGrant(TransferMode::kRead);
  UniqueFd fd = Dial();
  // Its own pages: fine.
  Answer ok = Raw(fd.get(), Header(mine, net::DataOp::kRead, 4));
  EXPECT_EQ(ok.code, 0) << ok.message;
  EXPECT_EQ(ok.payload.size(), 4 * mine.page_bytes);

  net::DataRequestHeader h = Header(mine, net::DataOp::kRead, 1);
  h.secret[3] ^= 1;  // a wrong secret
  Answer a = Raw(fd.get(), h);
  EXPECT_EQ(a.code, static_cast<int>(absl::StatusCode::kNotFound)) << a.message;
  EXPECT_TRUE(a.payload.empty());

  // The victim's transfer, its id known (ids leak in logs), its secret guessed.
  auto victim = beta_->BeginTransfer(beta_lease_, victim_range_, TransferMode::kRead, 0, {},
                                     TransferPath::kTcp);
  ASSERT_TRUE(victim.ok());
  h = Header(mine, net::DataOp::kRead, 1);
  h.transfer_id = victim->id;
  a = Raw(fd.get(), h);
  EXPECT_EQ(a.code, static_cast<int>(absl::StatusCode::kNotFound)) << a.message;
  EXPECT_TRUE(a.payload.empty());

  // Past the grant: a layer it does not hold, pages past its end, a huge count.
  h = Header(mine, net::DataOp::kRead, 1);
  h.layer_index = 3;
  EXPECT_EQ(Raw(fd.get(), h).code, static_cast<int>(absl::StatusCode::kOutOfRange));
  h = Header(mine, net::DataOp::kRead, 2);
  h.first_page = mine.num_pages - 1;
  EXPECT_EQ(Raw(fd.get(), h).code, static_cast<int>(absl::StatusCode::kOutOfRange));
  h = Header(mine, net::DataOp::kRead, 0xffffffffu);
  EXPECT_EQ(Raw(fd.get(), h).code, static_cast<int>(absl::StatusCode::kOutOfRange));
  h = Header(mine, net::DataOp::kRead, 0);
  EXPECT_EQ(Raw(fd.get(), h).code, static_cast<int>(absl::StatusCode::kOutOfRange));
  // A read that claims a payload is not our protocol.
  h = Header(mine, net::DataOp::kRead, 1);
  h.payload_bytes = 1;
  EXPECT_EQ(Raw(fd.get(), h).code, static_cast<int>(absl::StatusCode::kInvalidArgument));

  // A write through a read grant: refused, and the connection closes after the answer.
  UniqueFd w = Dial();
  a = Raw(w.get(), Header(mine, net::DataOp::kWrite, 1),
          std::vector<uint8_t>(mine.page_bytes, 0xEE));
  EXPECT_EQ(a.code, static_cast<int>(absl::StatusCode::kFailedPrecondition)) << a.message;

  // Garbage: INVALID_ARGUMENT, then the daemon closes.
  UniqueFd g = Dial();
  net::DataRequestHeader junk;
  std::memset(&junk, 0x41, sizeof(junk));
  a = Raw(g.get(), junk);
  EXPECT_EQ(a.code, static_cast<int>(absl::StatusCode::kInvalidArgument)) << a.message;
  char byte;
  EXPECT_EQ(recv(g.get(), &byte, 1, 0), 0) << "the daemon keeps a garbage connection open";

  // Ended transfers stop working at once.
  ASSERT_TRUE(alpha_->EndTransfer(mine.id).ok());
  UniqueFd after = Dial();
  a = Raw(after.get(), Header(mine, net::DataOp::kRead, 1));
  EXPECT_EQ(a.code, static_cast<int>(absl::StatusCode::kNotFound)) << a.message;
  ASSERT_TRUE(beta_->EndTransfer(victim->id).ok());
  ExpectVictimIntact();
}

// A write grant writes only its own pages, and a refused write changes nothing.
TEST_F(DataPlaneSecurityTest, WritesLandOnlyInTheGrantsPages) {
  client::TransferGrant mine = OwnGrant(TransferMode::kWrite);
  UniqueFd fd = Dial();
  std::vector<uint8_t> page(2 * mine.page_bytes, 0x5A);
  net::DataRequestHeader h = Header(mine, net::DataOp::kWrite, 2);
  h.layer_index = 1;
  h.first_page = 1;
  Answer a = Raw(fd.get(), h, page);
  EXPECT_EQ(a.code, 0) << a.message;
  ASSERT_TRUE(alpha_->EndTransfer(mine.id).ok());
  // Read back through a read grant of the same sequence: those pages hold the bytes.
  client::TransferGrant reader = OwnGrant(TransferMode::kRead, own_sequence_);
  h = Header(reader, net::DataOp::kRead, 2);
  h.layer_index = 1;
  h.first_page = 1;
  a = Raw(fd.get(), h);
  EXPECT_EQ(a.code, 0) << a.message;
  EXPECT_EQ(a.payload, page);
  ASSERT_TRUE(alpha_->EndTransfer(reader.id).ok());
  // A payload whose size disagrees with the pages is refused before a byte lands.
  client::TransferGrant again = OwnGrant(TransferMode::kWrite);
  UniqueFd fd2 = Dial();
  h = Header(again, net::DataOp::kWrite, 1);
  h.payload_bytes = again.page_bytes + 1;
  a = Raw(fd2.get(), h, std::vector<uint8_t>(again.page_bytes + 1, 0x11));
  EXPECT_EQ(a.code, static_cast<int>(absl::StatusCode::kInvalidArgument)) << a.message;
  ASSERT_TRUE(alpha_->EndTransfer(again.id).ok());
  ExpectVictimIntact();
}

// Unauthenticated connections (no valid request yet) cannot keep a tenant out: the
// oldest are closed to make room, and each is closed after its deadline.
TEST_F(DataPlaneSecurityTest, AnUnauthenticatedFloodDoesNotKeepTenantsOut) {
  std::vector<UniqueFd> flood;
  for (int i = 0; i < 300; ++i) {
    flood.push_back(Dial());
    if (i % 2 == 0) (void)!send(flood.back().get(), "KVWD", 4, MSG_NOSIGNAL);  // a partial header
  }
  std::printf("daemon during a flood of 300 unauthenticated connections: %s\n",
              ProcessFigures(daemon_->pid()).c_str());
  auto dp = DataPlane::Connect(alpha_.get(), alpha_lease_, {"pt16", "tcp"});
  ASSERT_TRUE(dp.ok()) << dp.status();
  auto seq = alpha_->CreateSequence(alpha_lease_, "pt16", 32);
  ASSERT_TRUE(seq.ok() && alpha_->ReserveSlots(seq->id, 32).ok());
  const PageRange r{seq->id, 0, 3, 0, 32};
  const auto bytes = RandomBytes(client::RangeBytes(r, seq->layout), 3);
  ASSERT_TRUE((*dp)->Put(r, bytes).ok());
  std::vector<uint8_t> back(bytes.size());
  ASSERT_TRUE((*dp)->Get(r, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, bytes);
  // Every flood connection is gone within the 5 s deadline (plus a sweep).
  int closed = 0;
  for (UniqueFd& fd : flood) {
    timeval tv{8, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char b;
    if (recv(fd.get(), &b, 1, 0) <= 0) ++closed;
  }
  EXPECT_EQ(closed, 300);
  std::printf("daemon after the flood: %s\n", ProcessFigures(daemon_->pid()).c_str());
  ExpectVictimIntact();
}

}  // namespace
}  // namespace kvwarden

namespace kvwarden {
namespace {

// Finding 3 measured 1,600 UCX endpoints over tcp taking the daemon to its fd limit. The
// worker is shared memory only now: endpoints from this host (however many, from how
// many workers) cost the daemon no fds of its own, and every tenant's calls still work.
TEST_F(DataPlaneSecurityTest, ManyUcxEndpointsCostTheDaemonNoFds) {
  const size_t before = OpenFds(daemon_->pid());
  std::vector<std::unique_ptr<DataPlane>> planes;
  for (int i = 0; i < 40; ++i) {
    auto dp = DataPlane::Connect(alpha_.get(), alpha_lease_, {"pt16", "shm"});
    ASSERT_TRUE(dp.ok()) << dp.status();
    planes.push_back(*std::move(dp));
  }
  auto ctx = ucx::Context::Create({"shm"});
  ASSERT_TRUE(ctx.ok());
  auto worker = ucx::Worker::Create(*ctx);
  ASSERT_TRUE(worker.ok());
  std::vector<ucx::Endpoint> eps;
  for (int i = 0; i < 1000; ++i) {
    auto ep = ucx::Endpoint::Connect(*worker, info_.ucx_worker_address, /*peer_errors=*/false);
    ASSERT_TRUE(ep.ok()) << ep.status();
    eps.push_back(*std::move(ep));
  }
  for (int i = 0; i < 200; ++i) worker->Progress();
  absl::SleepFor(absl::Milliseconds(200));
  const size_t after = OpenFds(daemon_->pid());
  std::printf("daemon fds: %zu before, %zu after 40 DataPlanes and 1000 endpoints\n", before, after);
  EXPECT_LT(after, before + 50) << before << " fds before, " << after << " after";
  eps.clear();
  planes.clear();
  ExpectVictimIntact();
}

// A tenant holds at most 64 TCP data connections (its 65th is refused with the limit
// named); the victim still connects and reads.
TEST_F(DataPlaneSecurityTest, ATenantsTcpDataConnectionsAreCapped) {
  client::TransferGrant mine = OwnGrant(TransferMode::kRead);
  std::vector<UniqueFd> held;
  for (int i = 0; i < 64; ++i) {
    held.push_back(Dial());
    Answer a = Raw(held.back().get(), Header(mine, net::DataOp::kRead, 1));
    ASSERT_EQ(a.code, 0) << "connection " << i << ": " << a.message;
  }
  std::printf("daemon holding 64 authenticated TCP data connections: %s\n",
              ProcessFigures(daemon_->pid()).c_str());
  UniqueFd over = Dial();
  Answer a = Raw(over.get(), Header(mine, net::DataOp::kRead, 1));
  EXPECT_EQ(a.code, static_cast<int>(absl::StatusCode::kResourceExhausted)) << a.message;
  EXPECT_NE(a.message.find("64"), std::string::npos) << a.message;
  ExpectVictimIntact();
  ASSERT_TRUE(alpha_->EndTransfer(mine.id).ok());
}

}  // namespace
}  // namespace kvwarden

namespace kvwarden {
namespace {

// Over shared memory, UCX serves a peer's emulated RMA (memory it cannot map for the
// peer, or a forged key) at any address: measured here with memfd chunks, a get aimed
// outside the tenant's chunk succeeded. So who may reach the daemon's UCX worker at all
// is the boundary: the posix transport's segments are opened through
// /proc/<daemon>/fd (forced on, see ucx::BoundedTransports), which the kernel allows
// only to the daemon's own user (who can open every chunk file there anyway) and root.
// A worker running as another user cannot connect, so cannot aim RMA anywhere.
TEST(DataPlaneSecurityUidTest, AnotherUsersProcessCannotReachTheUcxWorker) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run the probe as another user";
  testing::UseLoopbackUcx();
  auto d = DaemonProcess::Start(std::string(testing::kDataPlaneConfig) +
                                "data_plane { memfd_chunks: true }\n");
  ASSERT_TRUE(d.ok()) << d.status();
  auto c = *Client::Connect({(*d)->target(), "alpha-token", absl::Seconds(10)});
  const uint64_t lease = c->RegisterWorker("hostile", client::Role::kBoth, 60000)->id;
  auto seq = c->CreateSequence(lease, "pt16", 64);
  ASSERT_TRUE(seq.ok() && c->ReserveSlots(seq->id, 64).ok());
  auto g = c->BeginTransfer(lease, {seq->id, 0, 3, 0, 64}, TransferMode::kRead);
  ASSERT_TRUE(g.ok() && !g->keys.empty()) << g.status();
  auto info = c->GetDataPlane("pt16");
  ASSERT_TRUE(info.ok());
  const client::ChunkKeyInfo k = g->keys.front();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Another user (nobody), then the attack: connect, unpack the key, get outside it.
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) _exit(3);
    auto ctx = ucx::Context::Create({"shm"});
    if (!ctx.ok()) _exit(4);
    auto worker = ucx::Worker::Create(*ctx);
    if (!worker.ok()) _exit(4);
    auto ep = ucx::Endpoint::Connect(*worker, info->ucx_worker_address, /*peer_errors=*/false);
    if (!ep.ok()) _exit(0);  // cannot reach the worker: the boundary holds
    auto rkey = ucx::RemoteKey::Unpack(*ep, k.rkey);
    if (!rkey.ok()) _exit(0);
    std::vector<uint8_t> buf(4096);
    ucp_request_param_t param{};
    ucs_status_ptr_t r = ucp_get_nbx(ep->get(), buf.data(), buf.size(), k.remote_address - 4096,
                                     rkey->get(), &param);
    _exit(ucx::Wait(*worker, r, "get", absl::Now() + absl::Seconds(3)).ok() ? 1 : 0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  std::printf("probe as another user: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  // A crash of the probe (UCX failing to map what it may not open) also means no access.
  if (WIFEXITED(status)) {
    EXPECT_NE(WEXITSTATUS(status), 1) << "another user's process read the daemon's memory";
    EXPECT_NE(WEXITSTATUS(status), 3) << "could not drop to another user";
  }
  ASSERT_EQ(kill((*d)->pid(), 0), 0) << "the daemon died";
  EXPECT_TRUE(c->EndTransfer(g->id).ok());
}

}  // namespace
}  // namespace kvwarden
