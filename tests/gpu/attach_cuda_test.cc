// Same-host attach of a cuda:0 pool: the daemon hands out CUDA IPC handles for the
// tenant's chunks, the client opens them and reads pages in place on the device; the
// bytes equal what the gRPC byte path returns, and what UCX RMA returns through the
// daemon's host staging buffer.
// Label gpu: skips when no CUDA device is visible.

#include <cuda_runtime.h>

#include "gtest/gtest.h"
#include "kernels/copy_kv.h"
#include "kvwarden/client.h"
#include "kvwarden/data_plane.h"
#include "tests/support/kv_pattern.h"
#include "tests/support/data_plane_env.h"
#include "tests/support/process.h"

namespace kvwarden {
namespace {

constexpr const char* kGpuConfig = R"pb(
  admin_token: "a"
  pools {
    name: "gpu"
    device: "cuda:0"
    layout { num_layers: 2 num_kv_heads: 4 head_dim: 64 dtype: DTYPE_FP16 page_tokens: 16 }
    capacity_bytes: 67108864
    chunk_bytes: 4194304
  }
  tenants { name: "t" token: "t" quota_pages: 4096 }
)pb";

TEST(AttachCudaTest, DevicePagesReadInPlaceMatchTheByteStream) {
  if (!kernels::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  testing::TempDir dir;
  auto daemon =
      testing::DaemonProcess::Start(kGpuConfig, {"--attach-socket=" + dir.path() + "/a.sock"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto c = *Client::Connect({(*daemon)->target(), "t", absl::Seconds(10)});
  // A decode (read-only) lease cannot attach a cuda pool: IPC mappings are read-write.
  auto decode = c->RegisterWorker("d", client::Role::kDecode, 60000);
  ASSERT_TRUE(decode.ok());
  auto refused = client::AttachedPool::Attach(c.get(), decode->id, {"gpu"});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  auto lease = c->RegisterWorker("w", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease.ok());
  auto seq = c->CreateSequence(lease->id, "gpu", 64);
  ASSERT_TRUE(seq.ok() && c->ReserveSlots(seq->id, 40).ok());
  const client::Layout& l = seq->layout;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    std::string k = testing::PatternKv(1, layer, l.num_kv_heads, 0, 40, l.token_bytes(), false);
    std::string v = testing::PatternKv(1, layer, l.num_kv_heads, 0, 40, l.token_bytes(), true);
    ASSERT_TRUE(c->WriteKV(seq->id, l, layer, 1, 0, 40,
                           {reinterpret_cast<const uint8_t*>(k.data()), k.size()},
                           {reinterpret_cast<const uint8_t*>(v.data()), v.size()})
                    .ok());
  }
  auto pool = client::AttachedPool::Attach(c.get(), lease->id, {"gpu"});
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_TRUE((*pool)->on_device());
  auto m = (*pool)->Map({seq->id, 0, l.num_layers, 0, 40});
  ASSERT_TRUE(m.ok()) << m.status();
  const size_t pb = client::PageBytes(l);
  std::vector<uint8_t> host(pb);
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    const std::string expect_k =
        testing::PatternKv(1, layer, l.num_kv_heads, 0, 40, l.token_bytes(), false);
    for (uint32_t p = 0; p < (*m)->num_pages(); ++p) {
      ASSERT_EQ(cudaMemcpy(host.data(), (*m)->page(layer, p), pb, cudaMemcpyDeviceToHost),
                cudaSuccess);
      auto view = client::PageView::Contiguous(l, host.data(), p, 1);
      for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
        for (uint32_t s = p * 16; s < std::min(40u, (p + 1) * 16); ++s) {
          EXPECT_EQ(std::string(reinterpret_cast<char*>(view.k(h, s)), l.token_bytes()),
                    expect_k.substr((size_t{h} * 40 + s) * l.token_bytes(), l.token_bytes()));
        }
      }
    }
  }
  // UCX RMA of device pages goes through a host staging buffer (Debian's UCX has no CUDA
  // memory support): the bytes equal the device pages.
  auto dp = client::DataPlane::Connect(c.get(), lease->id, {"gpu", "shm"});
  ASSERT_TRUE(dp.ok()) << dp.status();
  const client::PageRange r{seq->id, 1, 1, 0, 40};
  std::vector<uint8_t> buf(client::RangeBytes(r, l));
  ASSERT_TRUE((*dp)->Get(r, absl::MakeSpan(buf)).ok());
  for (uint32_t p = 0; p < (*m)->num_pages(); ++p) {
    ASSERT_EQ(cudaMemcpy(host.data(), (*m)->page(1, p), pb, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(0, memcmp(host.data(), buf.data() + p * pb, pb)) << "page " << p;
  }
}

// The worker writes K/V into device pages through its IPC mapping (the in-place write
// path), ends the mapping (which waits for the device), and the daemon reads exactly those
// bytes back: the write crossed processes through the daemon's own allocation.
TEST(AttachCudaTest, AWriteThroughTheIpcMappingIsWhatTheDaemonReads) {
  if (!kernels::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  testing::TempDir dir;
  auto daemon =
      testing::DaemonProcess::Start(kGpuConfig, {"--attach-socket=" + dir.path() + "/a.sock"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto c = *Client::Connect({(*daemon)->target(), "t", absl::Seconds(10)});
  auto lease = c->RegisterWorker("prefill", client::Role::kPrefill, 60000);
  ASSERT_TRUE(lease.ok());
  auto seq = c->CreateSequence(lease->id, "gpu", 64);
  ASSERT_TRUE(seq.ok() && c->ReserveSlots(seq->id, 40).ok());
  const client::Layout& l = seq->layout;
  auto pool = client::AttachedPool::Attach(c.get(), lease->id, {"gpu"});
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_TRUE((*pool)->on_device());
  const client::PageRange r{seq->id, 0, l.num_layers, 0, 40};
  auto m = (*pool)->Map(r, client::TransferMode::kWrite);
  ASSERT_TRUE(m.ok()) << m.status();
  const size_t pb = client::PageBytes(l);
  const std::vector<uint8_t> bytes = testing::RandomBytes(client::RangeBytes(r, l), 31);
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    for (uint32_t p = 0; p < (*m)->num_pages(); ++p) {
      uint8_t* page = (*m)->mutable_page(layer, p);
      ASSERT_NE(page, nullptr);
      ASSERT_EQ(cudaMemcpyAsync(page, bytes.data() + (size_t{layer} * (*m)->num_pages() + p) * pb,
                                pb, cudaMemcpyHostToDevice, nullptr),
                cudaSuccess);
    }
  }
  ASSERT_TRUE((*m)->End().ok());  // waits for the device before the lease ends
  // The daemon's view of the same pages, through the data plane (staged out of device
  // memory by the daemon itself).
  auto dp = client::DataPlane::Connect(c.get(), lease->id, {"gpu", "tcp"});
  ASSERT_TRUE(dp.ok()) << dp.status();
  std::vector<uint8_t> back(bytes.size());
  ASSERT_TRUE((*dp)->Get(r, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, bytes);
}

// A CUDA IPC handle cannot be revoked: once a tenant's worker was given one for a chunk,
// that chunk never goes to another tenant (whose KV the old handle would reach). Two
// chunks; t attaches to the one it used, releases everything; u then gets only the
// other chunk, and t gets its own back.
constexpr const char* kTwoTenantConfig = R"pb(
  admin_token: "a"
  pools {
    name: "gpu"
    device: "cuda:0"
    layout { num_layers: 2 num_kv_heads: 4 head_dim: 64 dtype: DTYPE_FP16 page_tokens: 16 }
    capacity_bytes: 8388608
    chunk_bytes: 4194304
  }
  tenants { name: "t" token: "t" quota_pages: 4096 }
  tenants { name: "u" token: "u" quota_pages: 4096 }
)pb";

TEST(AttachCudaTest, AChunkWhoseHandleWasHandedOutNeverGoesToAnotherTenant) {
  if (!kernels::CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  testing::TempDir dir;
  auto daemon = testing::DaemonProcess::Start(kTwoTenantConfig,
                                              {"--attach-socket=" + dir.path() + "/a.sock"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto t = *Client::Connect({(*daemon)->target(), "t", absl::Seconds(10)});
  auto u = *Client::Connect({(*daemon)->target(), "u", absl::Seconds(10)});
  auto t_lease = t->RegisterWorker("t", client::Role::kBoth, 60000);
  auto u_lease = u->RegisterWorker("u", client::Role::kBoth, 60000);
  ASSERT_TRUE(t_lease.ok() && u_lease.ok());
  // 16 KiB pages, 256 to a chunk; a sequence of 2 layers takes 2 pages per 16 tokens.
  auto t_seq = t->CreateSequence(t_lease->id, "gpu", 4096);
  ASSERT_TRUE(t_seq.ok() && t->ReserveSlots(t_seq->id, 16).ok());
  auto attached = client::AttachedPool::Attach(t.get(), t_lease->id, {"gpu"});
  ASSERT_TRUE(attached.ok()) << attached.status();
  ASSERT_TRUE(t->ReleaseSequence(t_seq->id).ok());

  auto u_seq = u->CreateSequence(u_lease->id, "gpu", 4096);
  ASSERT_TRUE(u_seq.ok());
  // Both chunks' worth (264 pages) needs t's chunk too: refused, not handed over.
  const auto both = u->ReserveSlots(u_seq->id, 2100);
  EXPECT_EQ(both.status().code(), absl::StatusCode::kResourceExhausted) << both.status();
  ASSERT_TRUE(u->ReserveSlots(u_seq->id, 2000).ok());  // 250 pages: the other chunk

  auto t_again = t->CreateSequence(t_lease->id, "gpu", 4096);
  ASSERT_TRUE(t_again.ok());
  EXPECT_TRUE(t->ReserveSlots(t_again->id, 16).ok()) << "t's own chunk was not given back to it";
}

}  // namespace
}  // namespace kvwarden
