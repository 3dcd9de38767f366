// Cluster mode across network stacks: two daemons, each in a network namespace of its
// own (ip netns, veth pairs on a bridge, addresses made here), so they share no loopback
// and a migration's pages really cross a network: prefill on node A, MigrateSequence to
// node B, every byte read back on B, and B read them from A's address. etcd listens on
// the bridge. Needs root and iproute2 (it says why it skips otherwise); every namespace,
// link and process it makes goes when it ends.

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvwarden/client.h"
#include "tests/support/etcd_process.h"
#include "tests/support/kv_pattern.h"
#include "tests/support/process.h"
#include "tests/support/test_config.h"

namespace kvwarden {
namespace {

using testing::DaemonProcess;
using testing::EtcdProcess;
using ::testing::HasSubstr;

constexpr char kIp[] = "/usr/sbin/ip";
constexpr char kPeerToken[] = "netns-peer-secret";
constexpr uint32_t kLayers = 4, kHeads = 2, kTokenBytes = 16 * 2;  // pool "main"

// A bridge in this namespace at <net>.1 and `n` namespaces, the i-th at <net>.(i + 2) on a
// veth pair to the bridge. Removed (namespaces, links) on destruction.
class NetnsLab {
 public:
  static absl::StatusOr<std::unique_ptr<NetnsLab>> Create(int n) {
    if (geteuid() != 0) return absl::FailedPreconditionError("needs root (ip netns)");
    if (access(kIp, X_OK) != 0) return absl::FailedPreconditionError("needs iproute2's ip");
    std::unique_ptr<NetnsLab> lab(new NetnsLab());
    const int id = getpid() % 100000;
    lab->net_ = absl::StrCat("10.213.", 20 + getpid() % 200);
    lab->bridge_ = absl::StrCat("kvwb", id);
    if (absl::Status s = lab->Ip({"link", "add", lab->bridge_, "type", "bridge"}); !s.ok())
      return s;
    if (absl::Status s = lab->Ip({"addr", "add", lab->bridge_ip() + "/24", "dev", lab->bridge_});
        !s.ok())
      return s;
    if (absl::Status s = lab->Ip({"link", "set", lab->bridge_, "up"}); !s.ok()) return s;
    for (int i = 0; i < n; ++i) {
      const std::string ns = absl::StrCat("kvw-", id, "-", i);
      const std::string outer = absl::StrCat("kvv", id, "x", i);
      if (absl::Status s = lab->Ip({"netns", "add", ns}); !s.ok()) return s;
      lab->namespaces_.push_back(ns);
      for (const std::vector<std::string>& cmd : std::vector<std::vector<std::string>>{
               {"link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns},
               {"link", "set", outer, "master", lab->bridge_},
               {"link", "set", outer, "up"},
               {"-n", ns, "addr", "add", lab->node_ip(i) + "/24", "dev", "eth0"},
               {"-n", ns, "link", "set", "eth0", "up"},
               {"-n", ns, "link", "set", "lo", "up"}}) {
        if (absl::Status s = lab->Ip(cmd); !s.ok()) return s;
      }
    }
    return lab;
  }
  ~NetnsLab() {
    for (const std::string& ns : namespaces_) (void)Ip({"netns", "del", ns});
    (void)Ip({"link", "del", bridge_});  // its veth ends went with the namespaces
  }

  std::string bridge_ip() const { return net_ + ".1"; }
  std::string node_ip(int i) const { return absl::StrCat(net_, ".", i + 2); }
  std::vector<std::string> exec_in(int i) const { return {kIp, "netns", "exec", namespaces_[i]}; }

 private:
  NetnsLab() = default;
  absl::Status Ip(std::vector<std::string> args) const {
    args.insert(args.begin(), kIp);
    testing::CommandResult r = testing::RunCommand(args);
    if (r.exit_code == 0) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat("ip ", args[1], " ", args[2], ": ", r.err));
  }
  std::string net_, bridge_;
  std::vector<std::string> namespaces_;
};

TEST(NetnsMigrationTest, ASequenceMovesBetweenDaemonsInSeparateNetworkStacks) {
  absl::StatusOr<std::unique_ptr<NetnsLab>> lab = NetnsLab::Create(2);
  if (!lab.ok()) GTEST_SKIP() << "no network namespaces here: " << lab.status();
  auto etcd = EtcdProcess::Start((*lab)->bridge_ip());
  ASSERT_TRUE(etcd.ok()) << etcd.status();
  std::vector<std::unique_ptr<DaemonProcess>> nodes;
  for (int i = 0; i < 2; ++i) {
    // UCX off: between machines pages move on the TCP data path alone.
    auto d = DaemonProcess::Start(
        absl::StrCat(testing::kTestConfig, " data_plane { disable_ucx: true }",
                     " cluster { lease_ttl_s: 3 peer_token: \"", kPeerToken, "\" }"),
        {(*etcd)->cluster_flag_on_also(), absl::StrCat("--node=ns-node-", i)},
        (*lab)->node_ip(i) + ":0", (*lab)->exec_in(i));
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_THAT((*d)->target(), HasSubstr((*lab)->node_ip(i)));
    nodes.push_back(*std::move(d));
  }
  auto a = Client::Connect({nodes[0]->target(), testing::kAlphaToken, absl::Seconds(10)});
  auto b = Client::Connect({nodes[1]->target(), testing::kAlphaToken, absl::Seconds(10)});
  ASSERT_TRUE(a.ok() && b.ok());
  // Both registered and each sees the other.
  const absl::Time until = absl::Now() + absl::Seconds(15);
  absl::StatusOr<client::ClusterNodes> listed = (*b)->ListNodes();
  while (absl::Now() < until && (!listed.ok() || listed->nodes.size() < 2)) {
    absl::SleepFor(absl::Milliseconds(50));
    listed = (*b)->ListNodes();
  }
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->nodes.size(), 2u);

  auto lease = (*a)->RegisterWorker("prefill", client::Role::kPrefill, 60000);
  ASSERT_TRUE(lease.ok()) << lease.status();
  auto seq = (*a)->CreateSequence(lease->id, "main", 256);
  ASSERT_TRUE(seq.ok()) << seq.status();
  constexpr uint32_t kTokens = 64;
  ASSERT_TRUE((*a)->ReserveSlots(seq->id, kTokens).ok());
  std::string k, v;
  for (uint32_t layer = 0; layer < kLayers; ++layer) {
    k += testing::PatternKv(11, layer, kHeads, 0, kTokens, kTokenBytes, false);
    v += testing::PatternKv(11, layer, kHeads, 0, kTokens, kTokenBytes, true);
  }
  ASSERT_TRUE((*a)->WriteKV(seq->id, seq->layout, 0, kLayers, 0, kTokens,
                            {reinterpret_cast<const uint8_t*>(k.data()), k.size()},
                            {reinterpret_cast<const uint8_t*>(v.data()), v.size()})
                  .ok());
  auto before = (*a)->ReadKV(seq->id, 0, kLayers, 0, 0);
  ASSERT_TRUE(before.ok()) << before.status();

  auto moved = (*a)->MigrateSequence(seq->id, "ns-node-1");
  ASSERT_TRUE(moved.ok()) << moved.status() << "\nA:\n"
                          << nodes[0]->log() << "\nB:\n"
                          << nodes[1]->log();
  EXPECT_EQ(moved->grpc_address, nodes[1]->target());
  auto after = (*b)->ReadKV(moved->sequence_id, 0, kLayers, 0, 0);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->size(), before->size());
  for (size_t i = 0; i < after->size(); ++i) {
    EXPECT_TRUE((*after)[i].k == (*before)[i].k) << "layer " << i;
    EXPECT_TRUE((*after)[i].v == (*before)[i].v) << "layer " << i;
  }
  EXPECT_EQ((*a)->DescribeSequence(seq->id).status().code(), absl::StatusCode::kNotFound);
  // B pulled the pages from A's address on the bridge, not from a shared loopback.
  EXPECT_THAT(nodes[1]->log(), HasSubstr("event=sequence_adopted"));
  EXPECT_EQ(nodes[0]->target().substr(0, nodes[0]->target().rfind(':')), (*lab)->node_ip(0));
}

}  // namespace
}  // namespace kvwarden
