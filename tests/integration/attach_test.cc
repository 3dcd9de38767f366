// Same-host attach against a real kvwardend: the tenant's chunk fds over the attach
// socket, pages read in place equal to what was put, read-only for decode workers,
// written in place by prefill workers, refreshed as the tenant gains chunks, and never a
// chunk of another tenant. Bad attach requests get their exact codes.

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/fd/seqpacket.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvwarden/client.h"
#include "kvwarden/data_plane.h"
#include "kvwarden/v1/transfer.pb.h"
#include "tests/support/admin_probe.h"
#include "tests/support/data_plane_env.h"
#include "tests/support/process.h"

namespace kvwarden {
namespace {

using client::AttachedPool;
using client::DataPlane;
using client::PageRange;
using client::TransferMode;
using testing::DaemonProcess;
using ::testing::HasSubstr;
using testing::RandomBytes;

class AttachTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::UseLoopbackUcx();
    socket_ = dir_.path() + "/attach.sock";
    auto d = DaemonProcess::Start(testing::kDataPlaneConfig, {"--attach-socket=" + socket_});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    alpha_ = *Client::Connect({daemon_->target(), "alpha-token", absl::Seconds(10)});
    beta_ = *Client::Connect({daemon_->target(), "beta-token", absl::Seconds(10)});
  }
  uint64_t Lease(Client& c, client::Role role) { return c.RegisterWorker("w", role, 60000)->id; }
  // A sequence of `tokens` random bytes, put through the UCX data plane.
  std::pair<PageRange, std::vector<uint8_t>> Filled(Client& c, uint64_t lease, uint32_t tokens,
                                                    uint64_t seed) {
    auto seq = c.CreateSequence(lease, "pt16", tokens);
    EXPECT_TRUE(seq.ok() && c.ReserveSlots(seq->id, tokens).ok());
    const PageRange r{seq->id, 0, 3, 0, tokens};
    auto bytes = RandomBytes(client::RangeBytes(r, seq->layout), seed);
    auto dp = DataPlane::Connect(&c, lease, {"pt16", "shm"});
    EXPECT_TRUE(dp.ok() && (*dp)->Put(r, bytes).ok());
    return {r, bytes};
  }
  v1::ListAttachmentsResponse Attachments() {
    return testing::AdminProbe(daemon_->target()).Attachments();
  }

  testing::TempDir dir_;
  std::string socket_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<Client> alpha_, beta_;
};

TEST_F(AttachTest, ADecodeWorkerReadsPagesInPlaceReadOnly) {
  const uint64_t prefill = Lease(*alpha_, client::Role::kPrefill);
  auto [range, bytes] = Filled(*alpha_, prefill, 100, 1);
  const uint64_t decode = Lease(*alpha_, client::Role::kDecode);
  auto pool = AttachedPool::Attach(alpha_.get(), decode, {"pt16"});
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_FALSE((*pool)->writable());
  auto m = (*pool)->Map(range);
  ASSERT_TRUE(m.ok()) << m.status();
  const size_t pb = client::PageBytes((*pool)->layout());
  const uint32_t pages = (*m)->num_pages();
  ASSERT_EQ(pages, 7u);
  for (uint32_t layer = 0; layer < 3; ++layer) {
    for (uint32_t p = 0; p < pages; ++p) {
      ASSERT_EQ(0,
                memcmp((*m)->page(layer, p), bytes.data() + (size_t{layer} * pages + p) * pb, pb))
          << "layer " << layer << " page " << p;
    }
    EXPECT_EQ((*m)->mutable_page(layer, 0), nullptr);
  }
  // The view addresses slots the way the daemon lays them out.
  const client::Layout& l = (*pool)->layout();
  auto view = client::PageView::Contiguous(l, bytes.data() + size_t{2} * pages * pb, 0, pages);
  EXPECT_EQ(0, memcmp((*m)->view(2).v(1, 77), view.v(1, 77), l.token_bytes()));
  // The mapping itself is read-only: making it writable is refused by the kernel.
  const uintptr_t page_size = sysconf(_SC_PAGESIZE);
  void* base =
      reinterpret_cast<void*>(reinterpret_cast<uintptr_t>((*m)->page(0, 0)) & ~(page_size - 1));
  EXPECT_NE(mprotect(base, page_size, PROT_READ | PROT_WRITE), 0);
  EXPECT_EQ((*pool)->Map(range, TransferMode::kWrite).status().code(),
            absl::StatusCode::kPermissionDenied);

  auto listed = Attachments();
  ASSERT_EQ(listed.attachments_size(), 1);
  EXPECT_EQ(listed.attachments(0).pid(), getpid());
  EXPECT_EQ(listed.attachments(0).tenant(), "alpha");
  EXPECT_FALSE(listed.attachments(0).writable());
  auto out = testing::RunCommand({testing::BinPath("kvwctl"), "--target=" + daemon_->target(),
                                  "--token=test-admin", "attached"});
  EXPECT_EQ(out.exit_code, 0) << out.err;
  EXPECT_THAT(out.out, HasSubstr("read-only"));
  EXPECT_THAT(out.out, HasSubstr(absl::StrCat(getpid())));
}

TEST_F(AttachTest, APrefillWorkerWritesInPlaceAndTheDataPlaneSeesIt) {
  const uint64_t lease = Lease(*alpha_, client::Role::kPrefill);
  auto [range, bytes] = Filled(*alpha_, lease, 40, 2);
  auto pool = AttachedPool::Attach(alpha_.get(), lease, {"pt16"});
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_TRUE((*pool)->writable());
  auto m = (*pool)->Map(range, TransferMode::kWrite);
  ASSERT_TRUE(m.ok()) << m.status();
  const size_t pb = client::PageBytes((*pool)->layout());
  std::memset((*m)->mutable_page(1, 2), 0x77, pb);
  ASSERT_TRUE((*m)->End().ok());
  auto dp = DataPlane::Connect(alpha_.get(), lease, {"pt16", "tcp"});
  ASSERT_TRUE(dp.ok());
  std::vector<uint8_t> back(bytes.size());
  ASSERT_TRUE((*dp)->Get(range, absl::MakeSpan(back)).ok());
  std::memset(bytes.data() + (size_t{1} * 3 + 2) * pb, 0x77, pb);
  EXPECT_EQ(back, bytes);
}

TEST_F(AttachTest, NewChunksArriveOnRefreshAndOtherTenantsChunksNever) {
  const uint64_t la = Lease(*alpha_, client::Role::kBoth);
  const uint64_t lb = Lease(*beta_, client::Role::kBoth);
  auto [ra, ba] = Filled(*alpha_, la, 100, 3);
  auto [rb, bb] = Filled(*beta_, lb, 100, 4);
  auto pa = AttachedPool::Attach(alpha_.get(), la, {"pt16"});
  auto pbeta = AttachedPool::Attach(beta_.get(), lb, {"pt16"});
  ASSERT_TRUE(pa.ok() && pbeta.ok());
  // 100 tokens = 7 pages x 3 layers of 4 KiB; 16 pages per 64 KiB chunk.
  EXPECT_EQ((*pa)->mapped_chunks(), 2u);
  EXPECT_EQ((*pbeta)->mapped_chunks(), 2u);
  // Beta cannot map alpha's sequence: it does not exist for beta.
  EXPECT_EQ((*pbeta)->Map(ra).status().code(), absl::StatusCode::kNotFound);
  // Alpha grows into new chunks after attaching: the next Map fetches them.
  auto [big, bigbytes] = Filled(*alpha_, la, 1000, 5);  // 63 pages x 3 layers
  auto m = (*pa)->Map(big);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*pa)->mapped_chunks(), 2u + 12u);  // 189 more pages
  const size_t pb = client::PageBytes((*pa)->layout());
  for (uint32_t layer = 0; layer < 3; ++layer) {
    for (uint32_t p = 0; p < (*m)->num_pages(); ++p) {
      ASSERT_EQ(0, memcmp((*m)->page(layer, p),
                          bigbytes.data() + (size_t{layer} * (*m)->num_pages() + p) * pb, pb));
    }
  }
  // Beta's view of its own pages is intact and it still holds only its own chunks.
  auto mb = (*pbeta)->Map(rb);
  ASSERT_TRUE(mb.ok());
  EXPECT_EQ(0, memcmp((*mb)->page(0, 0), bb.data(), pb));
  EXPECT_EQ((*pbeta)->mapped_chunks(), 2u);
}

TEST_F(AttachTest, BadAttachRequestsGetExactCodes) {
  const uint64_t la = Lease(*alpha_, client::Role::kBoth);
  auto admin = *Client::Connect({daemon_->target(), "test-admin", absl::Seconds(10)});
  auto nobody = *Client::Connect({daemon_->target(), "no-such-token", absl::Seconds(10)});
  EXPECT_EQ(AttachedPool::Attach(nobody.get(), la, {"pt16"}).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(AttachedPool::Attach(admin.get(), la, {"pt16"}).status().code(),
            absl::StatusCode::kPermissionDenied);  // GetDataPlane refuses the admin token
  EXPECT_EQ(AttachedPool::Attach(beta_.get(), la, {"pt16"}).status().code(),
            absl::StatusCode::kFailedPrecondition);  // alpha's lease
  EXPECT_EQ(AttachedPool::Attach(alpha_.get(), la, {"nope"}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Attachments().attachments_size(), 0);
  // A record that is not an AttachRequest: INVALID_ARGUMENT, and the daemon hangs up.
  {
    UniqueFd sock(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, socket_.data(), socket_.size());
    ASSERT_EQ(connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ASSERT_TRUE(SendRecord(sock.get(), std::string("\xff\xff\xff garbage", 11)).ok());
    std::vector<UniqueFd> fds;
    auto answer = RecvRecord(sock.get(), &fds, absl::Seconds(5));
    ASSERT_TRUE(answer.ok()) << answer.status();
    v1::AttachResponse resp;
    ASSERT_TRUE(resp.ParseFromString(*answer));
    EXPECT_EQ(resp.code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
    EXPECT_EQ(resp.message(), "attach request does not parse");
    EXPECT_TRUE(fds.empty());
    EXPECT_EQ(RecvRecord(sock.get(), &fds, absl::Seconds(5)).status().code(),
              absl::StatusCode::kUnavailable);
  }
  auto ok = AttachedPool::Attach(alpha_.get(), la, {"pt16"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->mapped_chunks(), 0u);  // alpha owns no chunk yet
  ok->reset();
  // The attachment goes when its connection closes.
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(Attachments().attachments_size(), 0);
}

// Where UCX stages a pool (cuda pools; stage_all_pools routes CPU pools the same way) a
// Map still names the pool's own chunks: an attachment reads in place, never through a
// staging buffer it was not passed.
TEST(AttachStagedPoolTest, MapsNameThePoolsOwnChunksNotAStagingBuffer) {
  testing::UseLoopbackUcx();
  testing::TempDir dir;
  auto daemon = DaemonProcess::Start(
      std::string(testing::kDataPlaneConfig) + "data_plane { stage_all_pools: true }\n",
      {"--attach-socket=" + dir.path() + "/a.sock"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto c = *Client::Connect({(*daemon)->target(), "alpha-token", absl::Seconds(10)});
  const uint64_t lease = c->RegisterWorker("w", client::Role::kBoth, 60000)->id;
  auto seq = c->CreateSequence(lease, "pt16", 40);
  ASSERT_TRUE(seq.ok() && c->ReserveSlots(seq->id, 40).ok());
  const PageRange r{seq->id, 0, 3, 0, 40};
  auto bytes = RandomBytes(client::RangeBytes(r, seq->layout), 9);
  auto dp = DataPlane::Connect(c.get(), lease, {"pt16", "shm"});
  ASSERT_TRUE(dp.ok() && (*dp)->Put(r, bytes).ok());
  auto pool = AttachedPool::Attach(c.get(), lease, {"pt16"});
  ASSERT_TRUE(pool.ok()) << pool.status();
  auto m = (*pool)->Map(r);
  ASSERT_TRUE(m.ok()) << m.status();
  const size_t pb = client::PageBytes((*pool)->layout());
  for (uint32_t layer = 0; layer < 3; ++layer) {
    for (uint32_t p = 0; p < (*m)->num_pages(); ++p) {
      ASSERT_EQ(0, memcmp((*m)->page(layer, p),
                          bytes.data() + (size_t{layer} * (*m)->num_pages() + p) * pb, pb));
    }
  }
  // The same range by UCX still goes through staging and reads the same bytes.
  std::vector<uint8_t> back(bytes.size());
  ASSERT_TRUE((*dp)->Get(r, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, bytes);
}

}  // namespace
}  // namespace kvwarden
