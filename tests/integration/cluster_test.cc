// Cluster mode, step 1: a kvwardend started with --cluster/--node registers itself in a
// real etcd (started here, stopped by pid) under an etcd lease it keeps alive; its entry
// leaves with a clean stop, lapses within the TTL after kill -9, and comes back after
// etcd lost everything, while the daemon serves its local traffic throughout.

#include <stdlib.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "cache_service/cluster/node_registration.h"
#include "common/cluster/etcd_client.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "kvwarden/client.h"
#include "kvwarden/v1/cluster.pb.h"
#include "tests/support/etcd_process.h"
#include "tests/support/process.h"
#include "tests/support/test_config.h"

namespace kvwarden {
namespace {

using testing::DaemonProcess;
using testing::EtcdProcess;
using ::testing::HasSubstr;

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto etcd = EtcdProcess::Start();
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
    auto client = EtcdClient::Create({{etcd_->endpoint()}, absl::Milliseconds(500)});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  // A daemon of the test config in the cluster as `node`, its entry under a `ttl_s` lease.
  std::unique_ptr<DaemonProcess> StartNode(const std::string& node, uint32_t ttl_s = 3,
                                           std::vector<std::string> more_flags = {}) {
    const std::string config =
        absl::StrCat(testing::kTestConfig, " cluster { lease_ttl_s: ", ttl_s, " }");
    std::vector<std::string> flags = {etcd_->cluster_flag(), "--node=" + node};
    flags.insert(flags.end(), more_flags.begin(), more_flags.end());
    auto d = DaemonProcess::Start(config, flags);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *std::move(d) : nullptr;
  }

  // The node's entry as etcd holds it now (nullopt: none), parsed.
  std::optional<v1::NodeInfo> Entry(const std::string& node) {
    auto kv = client_->Get(NodeKey(kDefaultClusterPrefix, node));
    if (!kv.ok() || !kv->has_value()) return std::nullopt;
    v1::NodeInfo info;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage((*kv)->value, &info).ok())
        << (*kv)->value;
    return info;
  }

  // Polls until the node's entry is there (or gone), within `within`; how long it took.
  std::optional<absl::Duration> WaitForEntry(const std::string& node, bool present,
                                             absl::Duration within) {
    const absl::Time start = absl::Now();
    while (absl::Now() - start < within) {
      if (Entry(node).has_value() == present) return absl::Now() - start;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return std::nullopt;
  }

  std::unique_ptr<EtcdProcess> etcd_;
  std::unique_ptr<EtcdClient> client_;
};

TEST_F(ClusterTest, ANodeRegistersItsAddressAndPoolsAndLeavesAtOnceOnAStop) {
  std::unique_ptr<DaemonProcess> a = StartNode("node-a");
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(WaitForEntry("node-a", true, absl::Seconds(10))) << a->log();
  std::optional<v1::NodeInfo> info = Entry("node-a");
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->node(), "node-a");
  EXPECT_EQ(info->grpc_address(), a->target());  // bound to 127.0.0.1: the address itself
  EXPECT_EQ(info->lease_ttl_s(), 3u);
  EXPECT_FALSE(info->version().empty());
  ASSERT_EQ(info->pools_size(), 2);
  EXPECT_EQ(info->pools(0).name(), "main");
  EXPECT_EQ(info->pools(0).device(), "cpu");
  EXPECT_GT(info->pools(0).capacity_pages(), 0u);
  EXPECT_EQ(info->pools(0).free_pages(), info->pools(0).capacity_pages());
  EXPECT_GT(info->pools(0).layout().num_layers(), 0u);
  // The entry is under an etcd lease: it goes with the daemon.
  auto kv = client_->Get(NodeKey(kDefaultClusterPrefix, "node-a"));
  ASSERT_TRUE(kv.ok() && kv->has_value());
  EXPECT_NE((*kv)->lease, 0);

  // Free pages follow the pool (refreshed with each renewal, every ttl / 3).
  auto alpha = Client::Connect({a->target(), testing::kAlphaToken, absl::Seconds(10)});
  ASSERT_TRUE(alpha.ok()) << alpha.status();
  auto lease = (*alpha)->RegisterWorker("w", client::Role::kPrefill, 60000);
  ASSERT_TRUE(lease.ok());
  auto seq = (*alpha)->CreateSequence(lease->id, "main", 64);
  ASSERT_TRUE(seq.ok());
  ASSERT_TRUE((*alpha)->ReserveSlots(seq->id, 64).ok());
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (absl::Now() < until &&
         Entry("node-a")->pools(0).free_pages() == info->pools(0).capacity_pages()) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_LT(Entry("node-a")->pools(0).free_pages(), info->pools(0).capacity_pages());

  // SIGTERM: the daemon revokes its lease on the way out, the entry goes at once.
  a.reset();
  std::optional<v1::NodeInfo> after = Entry("node-a");
  EXPECT_FALSE(after.has_value()) << "a cleanly stopped node's entry stays";
}

TEST_F(ClusterTest, AKilledNodesEntryLapsesWithinItsTtl) {
  std::unique_ptr<DaemonProcess> a = StartNode("node-a", 3);
  std::unique_ptr<DaemonProcess> b = StartNode("node-b", 3);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(WaitForEntry("node-a", true, absl::Seconds(10)));
  ASSERT_TRUE(WaitForEntry("node-b", true, absl::Seconds(10)));
  auto nodes = client_->GetPrefix(absl::StrCat(kDefaultClusterPrefix, "/nodes/"));
  ASSERT_TRUE(nodes.ok());
  EXPECT_EQ(nodes->size(), 2u);
  a->Kill();
  std::optional<absl::Duration> gone = WaitForEntry("node-a", false, absl::Seconds(10));
  ASSERT_TRUE(gone.has_value()) << "a killed node's entry outlived its lease";
  EXPECT_LE(*gone, absl::Seconds(3) + absl::Seconds(2)) << "TTL 3 s (+ etcd's lease check)";
  std::printf("kill -9 to entry gone: %.2f s (TTL 3 s)\n", absl::ToDoubleSeconds(*gone));
  EXPECT_TRUE(Entry("node-b").has_value()) << "the other node's entry went too";
}

TEST_F(ClusterTest, EtcdLosingEverythingTheNodeServesOnAndRegistersAgain) {
  std::unique_ptr<DaemonProcess> a = StartNode("node-a", 3);
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(WaitForEntry("node-a", true, absl::Seconds(10)));
  auto alpha = Client::Connect({a->target(), testing::kAlphaToken, absl::Seconds(10)});
  ASSERT_TRUE(alpha.ok());
  auto lease = (*alpha)->RegisterWorker("w", client::Role::kDecode, 60000);
  ASSERT_TRUE(lease.ok());

  etcd_->Stop();
  // etcd away for longer than the TTL: local traffic goes on.
  const absl::Time down = absl::Now();
  while (absl::Now() - down < absl::Seconds(4)) {
    auto seq = (*alpha)->CreateSequence(lease->id, "main", 16);
    ASSERT_TRUE(seq.ok()) << "the daemon stopped serving while etcd was down: " << seq.status();
    ASSERT_TRUE((*alpha)->ReleaseSequence(seq->id).ok());
    absl::SleepFor(absl::Milliseconds(200));
  }
  // etcd comes back empty (every lease and key lost): the node registers anew.
  ASSERT_TRUE(etcd_->Restart(/*wipe=*/true).ok());
  std::optional<absl::Duration> back = WaitForEntry("node-a", true, absl::Seconds(10));
  ASSERT_TRUE(back.has_value()) << a->log();
  std::printf("etcd back to node re-registered: %.2f s\n", absl::ToDoubleSeconds(*back));
  EXPECT_EQ(Entry("node-a")->grpc_address(), a->target());
  EXPECT_THAT(a->log(), HasSubstr("cluster_etcd_unreachable"));
  EXPECT_TRUE((*alpha)->ReleaseWorker(lease->id).ok());
}

TEST_F(ClusterTest, ANodeStartedWhileEtcdIsDownRegistersWhenItComes) {
  etcd_->Stop();
  std::unique_ptr<DaemonProcess> a = StartNode("node-a", 3);
  ASSERT_NE(a, nullptr) << "the daemon refused to start without etcd";
  absl::Status restarted = etcd_->Restart(/*wipe=*/false);
  ASSERT_TRUE(restarted.ok()) << restarted << "\n" << etcd_->log();
  EXPECT_TRUE(WaitForEntry("node-a", true, absl::Seconds(10))) << a->log();
}

TEST_F(ClusterTest, ANodeBehindAnotherAddressAdvertisesIt) {
  // A pod listening on 0.0.0.0 behind the node's IP (the DaemonSet's hostPort).
  std::unique_ptr<DaemonProcess> a = StartNode("node-a", 3, {"--advertise=10.1.2.3:50051"});
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(WaitForEntry("node-a", true, absl::Seconds(10)));
  EXPECT_EQ(Entry("node-a")->grpc_address(), "10.1.2.3:50051");
}

TEST_F(ClusterTest, KvwctlClusterListsEveryNode) {
  std::unique_ptr<DaemonProcess> a = StartNode("node-a");
  std::unique_ptr<DaemonProcess> b = StartNode("node-b");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(WaitForEntry("node-a", true, absl::Seconds(10)));
  ASSERT_TRUE(WaitForEntry("node-b", true, absl::Seconds(10)));
  const std::string kvwctl = testing::BinPath("kvwctl");
  testing::CommandResult r = testing::RunCommand({kvwctl, etcd_->cluster_flag(), "cluster"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("NODE"));
  EXPECT_THAT(r.out, HasSubstr("node-a"));
  EXPECT_THAT(r.out, HasSubstr(a->target()));
  EXPECT_THAT(r.out, HasSubstr("node-b"));
  EXPECT_THAT(r.out, HasSubstr(b->target()));
  EXPECT_THAT(r.out, HasSubstr("main cpu 8192/8192"));
  r = testing::RunCommand({kvwctl, etcd_->cluster_flag(), "--json", "cluster"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"node\": \"node-a\""));
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("\"grpc_address\": \"", b->target(), "\"")));
  // Usage errors exit 2 with one line; etcd away exits 3.
  r = testing::RunCommand({kvwctl, "cluster"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--cluster=etcd://HOST:PORT"));
  r = testing::RunCommand({kvwctl, "--cluster=etcd://nohost", "cluster"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("is not HOST:PORT"));
  etcd_->Stop();
  r = testing::RunCommand({kvwctl, etcd_->cluster_flag(), "--timeout-ms=1000", "cluster"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("cannot reach etcd"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST_F(ClusterTest, BadClusterSettingsExitTwoWithOneLine) {
  struct Case {
    std::vector<std::string> args;
    std::string config_tail;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--cluster=etcd://nohost", "--node=a"}, "", "cluster endpoint 'nohost' is not HOST:PORT"},
      {{etcd_->cluster_flag()}, "", "cluster.node: is required with cluster endpoints"},
      {{etcd_->cluster_flag(), "--node=a/b"}, "", "cluster.node: 'a/b'"},
      {{etcd_->cluster_flag(), "--node=a"},
       " cluster { lease_ttl_s: 1 }",
       "cluster.lease_ttl_s: 1 is outside [2, 300]"},
      {{"--node=a"}, "", "cluster.node: set without cluster endpoints"},
      {{etcd_->cluster_flag(), "--node=a", "--advertise=nohost"},
       "",
       "cluster.advertise: 'nohost' is not HOST:PORT"},
  };
  for (const Case& c : cases) {
    testing::TempDir dir;
    const std::string config =
        dir.Write("c.textproto", absl::StrCat(testing::kTestConfig, c.config_tail));
    std::vector<std::string> argv = {testing::BinPath("kvwardend"), "--config=" + config,
                                     "--listen=127.0.0.1:0"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    testing::CommandResult r = testing::RunCommand(argv);
    EXPECT_EQ(r.exit_code, 2) << c.message << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// A frozen etcd leader (SIGSTOP, as a hung machine): the node moves to another member,
// its entry never lapses, it serves its local traffic throughout, and it can still write
// to etcd (a handle) while the old leader stays frozen.
TEST(ClusterFailoverTest, AFrozenEtcdLeaderIsPassedByAndTheNodesEntryStays) {
  auto etcd = testing::EtcdCluster::Start();
  ASSERT_TRUE(etcd.ok()) << etcd.status();
  auto client = EtcdClient::Create({(*etcd)->endpoints(), absl::Milliseconds(500)});
  ASSERT_TRUE(client.ok());
  const std::string config = absl::StrCat(testing::kTestConfig, " cluster { lease_ttl_s: 5 }");
  auto node = DaemonProcess::Start(config, {(*etcd)->cluster_flag(), "--node=node-a"});
  ASSERT_TRUE(node.ok()) << node.status();
  auto present = [&] {
    auto kv = (*client)->Get(NodeKey(kDefaultClusterPrefix, "node-a"));
    return kv.ok() && kv->has_value();
  };
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (!present() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(50));
  ASSERT_TRUE(present());
  auto alpha = Client::Connect({(*node)->target(), testing::kAlphaToken, absl::Seconds(10)});
  ASSERT_TRUE(alpha.ok());
  auto lease = (*alpha)->RegisterWorker("w", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease.ok());
  auto seq = (*alpha)->CreateSequence(lease->id, "main", 4096);
  ASSERT_TRUE(seq.ok());

  absl::StatusOr<int> leader = (*etcd)->Leader();
  ASSERT_TRUE(leader.ok()) << leader.status();
  (*etcd)->Freeze(*leader);
  const absl::Time frozen = absl::Now();
  // Three lease TTLs with the leader frozen: local calls answer, the entry stays.
  // (A read of this test's own that went to the frozen member and timed out says
  // nothing of the entry: only a read that answered "absent" counts.)
  int reserved = 0, missing = 0, unanswered = 0;
  while (absl::Now() - frozen < absl::Seconds(15)) {
    ASSERT_TRUE((*alpha)->ReserveSlots(seq->id, 1).ok()) << "local traffic stopped";
    ++reserved;
    auto kv = (*client)->Get(NodeKey(kDefaultClusterPrefix, "node-a"));
    if (!kv.ok()) {
      ++unanswered;
    } else if (!kv->has_value()) {
      ++missing;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(missing, 0) << "the node's entry lapsed while a leader was frozen";
  EXPECT_GT(reserved, 50);
  // It still writes to etcd: a handle, through a live member.
  auto published = (*alpha)->PublishHandle(seq->id, "through-the-failover");
  EXPECT_TRUE(published.ok()) << published.status();
  absl::StatusOr<int> now = (*etcd)->Leader();
  ASSERT_TRUE(now.ok());
  EXPECT_NE(*now, *leader);
  std::printf(
      "etcd leader m%d frozen: m%d leads, %d local calls served, entry missing %d times (%d reads "
      "unanswered)\n",
      *leader, *now, reserved, missing, unanswered);
  (*etcd)->Thaw(*leader);
}

}  // namespace
}  // namespace kvwarden
