// A worker's view of the cluster through its daemons (ClusterClient, ListNodes): a real
// etcd (started here, stopped by pid) and two daemons. Nodes are listed without etcd
// access, a new sequence is placed on the worker's node first and else where most pages
// are free, a handle resolves to a client of its node (from each daemon's mirror of etcd,
// also after a migration), unreachable seeds are passed by and refusals are not.

#include "kvwarden/cluster_client.h"

#include <stdlib.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/cluster/cluster_keys.h"
#include "common/cluster/etcd_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvwarden/client.h"
#include "tests/support/etcd_process.h"
#include "tests/support/process.h"
#include "tests/support/test_config.h"

namespace kvwarden {
namespace {

using client::ClusterClient;
using client::ClusterOptions;
using testing::DaemonProcess;
using testing::EtcdProcess;
using ::testing::HasSubstr;

constexpr const char* kPeerToken = "cluster-peer-secret";

class ClusterClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto etcd = EtcdProcess::Start();
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
    for (const char* node : {"node-a", "node-b"}) {
      auto d = DaemonProcess::Start(
          absl::StrCat(testing::kTestConfig, " cluster { lease_ttl_s: 3 peer_token: \"", kPeerToken,
                       "\" }"),
          {etcd_->cluster_flag(), absl::StrCat("--node=", node)});
      ASSERT_TRUE(d.ok()) << d.status();
      nodes_.push_back(*std::move(d));
    }
    // Both entries written and mirrored by node-a.
    auto a = Client::Connect({nodes_[0]->target(), testing::kAlphaToken, absl::Seconds(10)});
    ASSERT_TRUE(a.ok());
    const absl::Time until = absl::Now() + absl::Seconds(10);
    while (absl::Now() < until) {
      auto listed = (*a)->ListNodes();
      if (listed.ok() && listed->nodes.size() == 2) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  std::unique_ptr<ClusterClient> Cluster(std::vector<std::string> seeds,
                                         const std::string& token = testing::kAlphaToken,
                                         const std::string& local = "") {
    ClusterOptions o;
    o.seeds = std::move(seeds);
    o.token = token;
    o.timeout = absl::Seconds(5);
    o.local_node = local;
    auto c = Client::ConnectCluster(std::move(o));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  std::unique_ptr<EtcdProcess> etcd_;
  std::vector<std::unique_ptr<DaemonProcess>> nodes_;
};

TEST_F(ClusterClientTest, NodesArePlacedLocalFirstThenWhereMostPagesAreFree) {
  std::unique_ptr<ClusterClient> cc = Cluster({nodes_[0]->target()});
  ASSERT_TRUE(cc);
  auto nodes = cc->Nodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  ASSERT_EQ(nodes->size(), 2u);
  EXPECT_EQ((*nodes)[0].node, "node-a");
  EXPECT_EQ((*nodes)[1].grpc_address, nodes_[1]->target());
  EXPECT_EQ((*nodes)[0].migration_transport, "tcp");
  ASSERT_EQ((*nodes)[0].pools.size(), 2u);
  EXPECT_EQ((*nodes)[0].pools[0].name, "main");
  EXPECT_EQ((*nodes)[0].pools[0].layout.num_layers, 4u);
  EXPECT_EQ(cc->LocalNode().value(), "node-a");

  // Local first.
  EXPECT_EQ(cc->Place("main", 16)->node, "node-a");
  EXPECT_EQ(cc->Place("main", 100000).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cc->Place("nope").status().code(), absl::StatusCode::kNotFound);
  client::Layout other = (*nodes)[0].pools[0].layout;
  other.head_dim = 7;
  EXPECT_EQ(cc->Place("main", 1, other).status().code(), absl::StatusCode::kNotFound);

  // A worker on no node of the cluster: the most free pages decides. node-a fills up.
  std::unique_ptr<ClusterClient> away =
      Cluster({nodes_[0]->target()}, testing::kAlphaToken, "elsewhere");
  auto a = cc->On("node-a");
  ASSERT_TRUE(a.ok());
  auto lease = (*a)->RegisterWorker("w", client::Role::kPrefill, 60000);
  ASSERT_TRUE(lease.ok());
  auto seq = (*a)->CreateSequence(lease->id, "main", 4096);
  ASSERT_TRUE(seq.ok());
  ASSERT_TRUE((*a)->ReserveSlots(seq->id, 1024).ok());  // 256 pages x 4 layers
  const absl::Time until = absl::Now() + absl::Seconds(10);
  absl::StatusOr<client::NodeInfo> placed = away->Place("main", 16);
  while (absl::Now() < until && placed.ok() && placed->node != "node-b") {
    absl::SleepFor(absl::Milliseconds(100));  // free pages refresh every ttl / 3
    placed = away->Place("main", 16);
  }
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_EQ(placed->node, "node-b");
  EXPECT_EQ(cc->Place("main", 16)->node, "node-a") << "local first while it has room";

  EXPECT_TRUE(cc->On("node-b").value()->Ping().ok());
  EXPECT_EQ(cc->On("node-z").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClusterClientTest, AHandleResolvesToItsNodeFromAnySeedAndFollowsAMigration) {
  std::unique_ptr<ClusterClient> cc = Cluster({nodes_[1]->target(), nodes_[0]->target()});
  ASSERT_TRUE(cc);
  auto a = cc->On("node-a");
  ASSERT_TRUE(a.ok());
  auto lease = (*a)->RegisterWorker("prefill", client::Role::kPrefill, 60000);
  ASSERT_TRUE(lease.ok());
  auto seq = (*a)->CreateSequence(lease->id, "main", 256);
  ASSERT_TRUE(seq.ok());
  ASSERT_TRUE((*a)->ReserveSlots(seq->id, 8).ok());
  ASSERT_TRUE((*a)->PublishHandle(seq->id, "req-1").ok());

  // Asked of node-b (the first seed): it answers from its mirror or from etcd.
  auto found = cc->Resolve("req-1");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->handle.node, "node-a");
  EXPECT_EQ(found->handle.sequence_id, seq->id);
  EXPECT_EQ(found->client, *a);
  EXPECT_EQ(cc->Resolve("req-none").status().code(), absl::StatusCode::kNotFound);
  // Another tenant never sees it.
  std::unique_ptr<ClusterClient> beta = Cluster({nodes_[1]->target()}, testing::kBetaToken);
  EXPECT_EQ(beta->Resolve("req-1").status().code(), absl::StatusCode::kNotFound);

  auto moved = cc->Migrate("node-a", seq->id, "node-b");
  ASSERT_TRUE(moved.ok()) << moved.status();
  const absl::Time until = absl::Now() + absl::Seconds(5);
  found = cc->Resolve("req-1");
  while (absl::Now() < until && found.ok() && found->handle.node != "node-b") {
    absl::SleepFor(absl::Milliseconds(10));
    found = cc->Resolve("req-1");
  }
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->handle.node, "node-b");
  EXPECT_EQ(found->handle.sequence_id, moved->sequence_id);
  EXPECT_TRUE(found->client->DescribeSequence(moved->sequence_id).ok());
}

TEST_F(ClusterClientTest, UnreachableSeedsArePassedByAndRefusalsAreNot) {
  const std::string dead = absl::StrCat("127.0.0.1:", testing::FreeLoopbackPort());
  std::unique_ptr<ClusterClient> cc = Cluster({dead, nodes_[1]->target()});
  auto nodes = cc->Nodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  EXPECT_EQ(nodes->size(), 2u);
  std::unique_ptr<ClusterClient> none = Cluster({dead});
  absl::Status s = none->Nodes().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr(dead));
  std::unique_ptr<ClusterClient> bad =
      Cluster({nodes_[0]->target(), nodes_[1]->target()}, "nobody");
  EXPECT_EQ(bad->Nodes().status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Client::ConnectCluster(ClusterOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);

  // Outside cluster mode ListNodes is refused precisely.
  auto single = DaemonProcess::Start(testing::kTestConfig);
  ASSERT_TRUE(single.ok());
  auto c = Client::Connect({(*single)->target(), testing::kAlphaToken, absl::Seconds(5)});
  ASSERT_TRUE(c.ok());
  absl::Status refused = (*c)->ListNodes().status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("needs cluster mode"));
}

}  // namespace
}  // namespace kvwarden
