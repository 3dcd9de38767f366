// Cluster mode, migration: two kvwardends in one cluster (a real etcd, started here and
// stopped by pid) move a sequence daemon to daemon. What the target adopts reads back
// byte for byte with its positions per head, epoch and evicted counts; the source lets
// go only after the target answered; a target killed mid-migration leaves the source
// serving the sequence unchanged; a peer sending a page that does not match its
// checksum gets DATA_LOSS and leaves nothing behind; another tenant, a wrong peer token,
// an unknown node or a daemon outside any cluster are refused with precise statuses.

#include <signal.h>
#include <stdlib.h>

#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cache_service/cluster/migrations.h"
#include "common/cluster/cluster_keys.h"
#include "common/cluster/etcd_client.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "kvwarden/admin_client.h"
#include "kvwarden/client.h"
#include "kvwarden/v1/cluster.pb.h"
#include "kvwarden/v1/peer.grpc.pb.h"
#include "tests/support/etcd_process.h"
#include "tests/support/kv_pattern.h"
#include "tests/support/policy_examples.h"
#include "tests/support/process.h"
#include "tests/support/test_config.h"

namespace kvwarden {
namespace {

using testing::DaemonProcess;
using testing::EtcdProcess;
using ::testing::HasSubstr;

constexpr const char* kPeerToken = "cluster-peer-secret";
constexpr uint32_t kLayers = 4, kHeads = 2, kTokenBytes = 16 * 2;  // pool "main"

class MigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto etcd = EtcdProcess::Start();
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
    auto client = EtcdClient::Create({{etcd_->endpoint()}, absl::Milliseconds(500)});
    ASSERT_TRUE(client.ok()) << client.status();
    etcd_client_ = *std::move(client);
    a_ = StartNode("node-a");
    b_ = StartNode("node-b");
    ASSERT_TRUE(a_ && b_);
    ASSERT_TRUE(WaitForNode("node-a") && WaitForNode("node-b"));
    alpha_a_ = Connect(*a_, testing::kAlphaToken);
    alpha_b_ = Connect(*b_, testing::kAlphaToken);
    auto lease = alpha_a_->RegisterWorker("prefill", client::Role::kPrefill, 60000);
    ASSERT_TRUE(lease.ok()) << lease.status();
    lease_a_ = lease->id;
  }

  std::unique_ptr<DaemonProcess> StartNode(const std::string& node) {
    const std::string config = absl::StrCat(
        testing::kTestConfig, " cluster { lease_ttl_s: 3 peer_token: \"", kPeerToken, "\" }");
    auto d = DaemonProcess::Start(config, {etcd_->cluster_flag(), "--node=" + node});
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *std::move(d) : nullptr;
  }
  bool WaitForNode(const std::string& node) {
    const absl::Time until = absl::Now() + absl::Seconds(10);
    while (absl::Now() < until) {
      auto kv = etcd_client_->Get(NodeKey(kDefaultClusterPrefix, node));
      if (kv.ok() && kv->has_value()) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }
  static std::unique_ptr<Client> Connect(const DaemonProcess& d, const char* token) {
    auto c = Client::Connect({d.target(), token, absl::Seconds(10)});
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  // Reserves and writes tokens [from, from + n) of every layer with PatternKv(7, ...).
  void ReserveAndWrite(const client::Sequence& seq, uint32_t from, uint32_t n) {
    auto r = alpha_a_->ReserveSlots(seq.id, n);
    ASSERT_TRUE(r.ok()) << r.status();
    std::string k, v;
    for (uint32_t layer = 0; layer < kLayers; ++layer) {
      k += testing::PatternKv(7, layer, kHeads, from, n, kTokenBytes, false);
      v += testing::PatternKv(7, layer, kHeads, from, n, kTokenBytes, true);
    }
    absl::Status w = alpha_a_->WriteKV(seq.id, seq.layout, 0, kLayers, from, n,
                                       {reinterpret_cast<const uint8_t*>(k.data()), k.size()},
                                       {reinterpret_cast<const uint8_t*>(v.data()), v.size()});
    ASSERT_TRUE(w.ok()) << w;
  }

  // A streaming sequence (budget 8, 4 sinks) of `tokens` tokens: past 8 tokens its
  // middle is dropped, so positions are not 0..n-1.
  uint64_t WrittenSequence(uint32_t tokens) {
    auto seq = alpha_a_->CreateSequence(lease_a_, "main", 256, client::Policy::Streaming(8));
    EXPECT_TRUE(seq.ok()) << seq.status();
    for (uint32_t done = 0; done < tokens; done += 4)
      ReserveAndWrite(*seq, done, std::min<uint32_t>(4, tokens - done));
    return seq->id;
  }

  // What a worker reads of every layer, and what the daemon says of every head.
  struct Snapshot {
    client::SequenceInfo info;
    std::vector<client::LayerKv> kv;
  };
  static Snapshot Take(Client& c, uint64_t id) {
    Snapshot s;
    auto info = c.DescribeSequence(id);
    EXPECT_TRUE(info.ok()) << info.status();
    auto kv = c.ReadKV(id, 0, kLayers, 0, 0);
    EXPECT_TRUE(kv.ok()) << kv.status();
    if (info.ok()) s.info = *info;
    if (kv.ok()) s.kv = *kv;
    return s;
  }
  // The same sequence, byte for byte, slot for slot, with the same policy figures.
  static void ExpectSame(const Snapshot& a, const Snapshot& b) {
    EXPECT_EQ(a.info.epoch, b.info.epoch);
    EXPECT_EQ(a.info.num_tokens, b.info.num_tokens);
    EXPECT_EQ(a.info.max_tokens, b.info.max_tokens);
    EXPECT_EQ(a.info.policy_summary, b.info.policy_summary);
    ASSERT_EQ(a.info.heads.size(), b.info.heads.size());
    for (size_t layer = 0; layer < a.info.heads.size(); ++layer) {
      ASSERT_EQ(a.info.heads[layer].size(), b.info.heads[layer].size());
      for (size_t h = 0; h < a.info.heads[layer].size(); ++h) {
        EXPECT_EQ(a.info.heads[layer][h].live_slots, b.info.heads[layer][h].live_slots);
        EXPECT_EQ(a.info.heads[layer][h].evicted, b.info.heads[layer][h].evicted);
        EXPECT_EQ(a.info.heads[layer][h].figures, b.info.heads[layer][h].figures)
            << layer << "/" << h;
      }
    }
    ASSERT_EQ(a.kv.size(), b.kv.size());
    for (size_t i = 0; i < a.kv.size(); ++i) {
      EXPECT_EQ(a.kv[i].positions, b.kv[i].positions) << "layer " << i;
      EXPECT_EQ(a.kv[i].head_live_counts, b.kv[i].head_live_counts);
      EXPECT_TRUE(a.kv[i].k == b.kv[i].k) << "layer " << i;
      EXPECT_TRUE(a.kv[i].v == b.kv[i].v) << "layer " << i;
    }
  }

  std::unique_ptr<EtcdProcess> etcd_;
  std::unique_ptr<EtcdClient> etcd_client_;
  std::unique_ptr<DaemonProcess> a_, b_;
  std::unique_ptr<Client> alpha_a_, alpha_b_;
  uint64_t lease_a_ = 0;
};

TEST_F(MigrationTest, AMigratedSequenceReadsBackByteForByteWithItsPositionsAndEpoch) {
  const uint64_t id = WrittenSequence(20);
  const Snapshot before = Take(*alpha_a_, id);
  ASSERT_GT(before.info.epoch, 0u) << "streaming should have dropped tokens";

  auto moved = alpha_a_->MigrateSequence(id, "node-b");
  ASSERT_TRUE(moved.ok()) << moved.status() << "\nA:\n" << a_->log() << "\nB:\n" << b_->log();
  EXPECT_EQ(moved->node, "node-b");
  EXPECT_EQ(moved->grpc_address, b_->target());
  EXPECT_NE(moved->lease_id, 0u);
  EXPECT_EQ(moved->bytes_moved, uint64_t{before.info.pages_held} * 512);
  std::printf("migrated %llu bytes in %.2f ms\n",
              static_cast<unsigned long long>(moved->bytes_moved),
              absl::ToDoubleMilliseconds(moved->duration));

  // Gone from A, only after B holds it.
  EXPECT_EQ(alpha_a_->DescribeSequence(id).status().code(), absl::StatusCode::kNotFound);
  const Snapshot after = Take(*alpha_b_, moved->sequence_id);
  ExpectSame(before, after);
  EXPECT_EQ(after.info.lease, moved->lease_id);
  // A decode worker on B takes it over with a fork and goes on decoding.
  auto decode = alpha_b_->RegisterWorker("decode", client::Role::kDecode, 60000);
  ASSERT_TRUE(decode.ok());
  auto fork = alpha_b_->ForkSequence(moved->sequence_id, decode->id);
  ASSERT_TRUE(fork.ok()) << fork.status();
  ASSERT_TRUE(alpha_b_->ReleaseSequence(moved->sequence_id).ok());
  auto next = alpha_b_->ReserveSlots(fork->id, 1);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->first_position, 20u);
  // The hand-off is logged on both sides.
  EXPECT_THAT(a_->log(), HasSubstr("sequence_migrated"));
  EXPECT_THAT(b_->log(), HasSubstr("sequence_adopted"));
}

// Scissorhands' hand-worked example (POLICIES.md) on A, then the move: B holds the same
// kept slots (0, 2, 5, 6) at epoch 1 with the same low-attention history, and its next
// statistics step at that epoch is taken as A would have taken it.
TEST_F(MigrationTest, AScissorhandsSequenceMovesWithItsCompressionAndHistory) {
  const testing::ScissorhandsExample ex = testing::MakeScissorhandsExample();
  client::Policy policy = client::Policy::Scissorhands(6);
  policy.recent = 2;
  policy.window = 3;
  policy.drop = 3;
  auto seq = alpha_a_->CreateSequence(lease_a_, "main", 100, policy);
  ASSERT_TRUE(seq.ok()) << seq.status();
  auto stream = *alpha_a_->OpenStatsStream();
  uint32_t reserved = 0;
  uint64_t epoch = 0;
  auto step_of = [&](uint32_t attended, const std::vector<uint32_t>& listed) {
    client::DecodeStep s;
    for (uint32_t layer = 0; layer < kLayers; ++layer) {
      for (uint32_t h = 0; h < kHeads; ++h) s.heads.push_back({layer, h, attended, listed, {}});
    }
    return s;
  };
  for (const auto& step : ex.steps) {
    ReserveAndWrite(*seq, reserved, step.attended - reserved);
    reserved = step.attended;
    auto u = stream->SendSteps(seq->id, epoch, {step_of(step.attended, step.listed)});
    ASSERT_TRUE(u.ok()) << u.status();
    epoch = u->epoch;
  }
  ASSERT_TRUE(stream->Close().ok());
  ASSERT_EQ(epoch, 1u);
  const Snapshot before = Take(*alpha_a_, seq->id);
  ASSERT_EQ(before.info.heads[0][0].live_slots, 4u);
  // The history is not blank: a fresh state on B would show up in this figure.
  ASSERT_GT(before.info.heads[0][0].Figure("low_max").value_or(0), 0.0);

  auto moved = alpha_a_->MigrateSequence(seq->id, "node-b");
  ASSERT_TRUE(moved.ok()) << moved.status();
  const Snapshot after = Take(*alpha_b_, moved->sequence_id);
  ExpectSame(before, after);
  EXPECT_EQ(after.kv[0].positions, (std::vector<uint32_t>{0, 2, 5, 6, 0, 2, 5, 6}));

  // Decoding goes on at B at the carried epoch: one more token, one more step.
  auto decode = alpha_b_->RegisterWorker("decode", client::Role::kDecode, 60000);
  ASSERT_TRUE(decode.ok());
  auto fork = alpha_b_->ForkSequence(moved->sequence_id, decode->id);
  ASSERT_TRUE(fork.ok()) << fork.status();
  ASSERT_TRUE(alpha_b_->ReserveSlots(fork->id, 1).ok());
  auto on_b = *alpha_b_->OpenStatsStream();
  auto u = on_b->SendSteps(fork->id, 1, {step_of(5, {0, 4})});
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_GE(u->epoch, 1u);
  ASSERT_TRUE(on_b->Close().ok());
}

TEST_F(MigrationTest, AKilledTargetLeavesTheSourceServingTheSequenceUnchanged) {
  const uint64_t id = WrittenSequence(12);
  auto read_before = alpha_a_->ReadKV(id, 0, kLayers, 0, 0);
  ASSERT_TRUE(read_before.ok());
  auto info = alpha_a_->DescribeSequence(id);
  ASSERT_TRUE(info.ok());
  // B frozen: the call reaches it and waits; then B dies with it in flight.
  ASSERT_EQ(kill(b_->pid(), SIGSTOP), 0);
  absl::StatusOr<client::Migration> moved;
  std::thread migrate([&] { moved = alpha_a_->MigrateSequence(id, "node-b"); });
  absl::SleepFor(absl::Milliseconds(500));
  // Meanwhile the sequence takes no writes.
  std::string k(kHeads * kTokenBytes, 'x');
  absl::Status w = alpha_a_->WriteKV(id, info->layout, 0, 1, 11, 1,
                                     {reinterpret_cast<const uint8_t*>(k.data()), k.size()},
                                     {reinterpret_cast<const uint8_t*>(k.data()), k.size()});
  EXPECT_EQ(w.code(), absl::StatusCode::kFailedPrecondition) << w;
  EXPECT_THAT(w.message(), HasSubstr("migrating"));
  b_->Kill();
  migrate.join();
  ASSERT_FALSE(moved.ok());
  EXPECT_EQ(moved.status().code(), absl::StatusCode::kUnavailable) << moved.status();
  EXPECT_THAT(moved.status().message(), HasSubstr("node-b"));
  auto read_after = alpha_a_->ReadKV(id, 0, kLayers, 0, 0);
  ASSERT_TRUE(read_after.ok()) << read_after.status();
  for (size_t i = 0; i < read_after->size(); ++i) {
    EXPECT_TRUE((*read_after)[i].k == (*read_before)[i].k);
    EXPECT_TRUE((*read_after)[i].v == (*read_before)[i].v);
  }
  // It takes reservations again.
  EXPECT_TRUE(alpha_a_->ReserveSlots(id, 1).ok());
}

// One tenant's migrations waiting on a stuck target cannot keep another tenant's out:
// past 16 of its own it is refused at once, while the other tenant's is still taken.
TEST_F(MigrationTest, OneTenantCannotFillTheMigrationQueue) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < Migrations::kMaxPendingPerTenant + 3; ++i) {
    auto seq = alpha_a_->CreateSequence(lease_a_, "main", 16);
    ASSERT_TRUE(seq.ok()) << seq.status();
    ASSERT_TRUE(alpha_a_->ReserveSlots(seq->id, 4).ok());
    ids.push_back(seq->id);
  }
  auto beta_a = Connect(*a_, testing::kBetaToken);
  auto beta_lease = beta_a->RegisterWorker("beta", client::Role::kPrefill, 60000);
  ASSERT_TRUE(beta_lease.ok());
  auto beta_seq = beta_a->CreateSequence(beta_lease->id, "main", 16);
  ASSERT_TRUE(beta_seq.ok());
  ASSERT_TRUE(beta_a->ReserveSlots(beta_seq->id, 4).ok());

  ASSERT_EQ(kill(b_->pid(), SIGSTOP), 0);  // the first migration waits on B
  std::vector<absl::StatusCode> codes(ids.size());
  std::vector<std::string> messages(ids.size());
  std::vector<std::thread> calls;
  for (size_t i = 0; i < ids.size(); ++i) {
    calls.emplace_back([&, i] {
      auto c = Connect(*a_, testing::kAlphaToken);
      absl::Status s = c->MigrateSequence(ids[i], "node-b").status();
      codes[i] = s.code();
      messages[i] = std::string(s.message());
    });
    absl::SleepFor(absl::Milliseconds(20));
  }
  absl::SleepFor(absl::Milliseconds(500));
  absl::StatusOr<client::Migration> beta_moved;
  std::thread beta_call([&] { beta_moved = beta_a->MigrateSequence(beta_seq->id, "node-b"); });
  absl::SleepFor(absl::Milliseconds(300));
  b_->Kill();  // every waiting migration now fails fast
  for (std::thread& t : calls) t.join();
  beta_call.join();
  int refused = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (codes[i] == absl::StatusCode::kResourceExhausted) {
      ++refused;
      EXPECT_THAT(messages[i], HasSubstr("migrations of this tenant wait or run"));
    } else {
      EXPECT_EQ(codes[i], absl::StatusCode::kUnavailable) << messages[i];
    }
  }
  EXPECT_EQ(refused, 3);
  // Beta was queued behind them, not refused; it fails only because B died.
  EXPECT_EQ(beta_moved.status().code(), absl::StatusCode::kUnavailable) << beta_moved.status();
  for (uint64_t id : ids) EXPECT_TRUE(alpha_a_->DescribeSequence(id).ok());
}

TEST_F(MigrationTest, APageThatDoesNotMatchItsChecksumIsRefusedAndNothingIsAdopted) {
  // The test plays a source node: a real read grant on A's TCP data path, and an image
  // whose last page checksum is wrong.
  const uint64_t id = WrittenSequence(6);  // 2 pages per layer, no drops yet
  auto info = alpha_a_->DescribeSequence(id);
  ASSERT_TRUE(info.ok());
  auto dp = alpha_a_->GetDataPlane("main");
  ASSERT_TRUE(dp.ok() && dp->tcp_data_port != 0);
  auto grant =
      alpha_a_->BeginTransfer(lease_a_, {id, 0, kLayers, 0, 6}, client::TransferMode::kRead, 30000,
                              {}, client::TransferPath::kTcp);
  ASSERT_TRUE(grant.ok()) << grant.status();

  v1::AdoptSequenceRequest req;
  v1::SequenceImage* im = req.mutable_image();
  im->set_source_sequence_id(id);
  im->set_tenant("alpha");
  im->set_pool("main");
  im->mutable_layout()->set_num_layers(kLayers);
  im->mutable_layout()->set_num_kv_heads(kHeads);
  im->mutable_layout()->set_head_dim(16);
  im->mutable_layout()->set_dtype(v1::DTYPE_FP16);
  im->mutable_layout()->set_page_tokens(4);
  im->set_max_tokens(256);
  im->set_num_tokens(6);
  for (uint32_t i = 0; i < kLayers * kHeads; ++i) im->add_heads()->set_live(6);
  for (uint32_t layer = 0; layer < kLayers; ++layer) {
    im->add_layer_pages(2);
    im->add_page_crc32c(0);
    im->add_page_crc32c(0);
  }
  req.set_source_node("node-a");
  req.set_data_host("127.0.0.1");
  req.set_data_port(dp->tcp_data_port);
  req.set_transfer_id(grant->id);
  req.set_data_secret(grant->data_secret);
  auto stub = v1::PeerService::NewStub(
      grpc::CreateChannel(b_->target(), grpc::InsecureChannelCredentials()));
  auto call = [&](const std::string& token) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    v1::AdoptSequenceResponse resp;
    return stub->AdoptSequence(&ctx, req, &resp);
  };
  // Pages are read only from the source node's own address.
  req.set_data_host("10.255.0.1");
  grpc::Status s = call(kPeerToken);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("is not the address of source node 'node-a'"));
  req.set_data_host("127.0.0.1");
  req.set_source_node("node-nowhere");
  s = call(kPeerToken);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  req.set_source_node("node-a");
  s = call(kPeerToken);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("checksum"));
  // A tenant's or the admin's token is not the peer token.
  EXPECT_EQ(call(testing::kAlphaToken).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call(testing::kAdminToken).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // B holds nothing: no sequence, no page in use.
  auto admin_b =
      client::AdminClient::Connect({b_->target(), testing::kAdminToken, absl::Seconds(10)});
  ASSERT_TRUE(admin_b.ok());
  auto seqs = (*admin_b)->ListSequences(v1::ListSequencesRequest());
  ASSERT_TRUE(seqs.ok());
  EXPECT_EQ(seqs->sequences_size(), 0);
  auto pools = (*admin_b)->ListPools();
  ASSERT_TRUE(pools.ok());
  for (const auto& p : pools->pools()) EXPECT_EQ(p.used_pages(), 0u) << p.name();
  EXPECT_TRUE(alpha_a_->EndTransfer(grant->id).ok());
}

TEST_F(MigrationTest, BadMigrationsAreRefusedWithPreciseStatusesAndChangeNothing) {
  const uint64_t id = WrittenSequence(4);
  auto code = [&](Client& c, uint64_t seq, const std::string& node) {
    return c.MigrateSequence(seq, node).status().code();
  };
  auto beta_a = Connect(*a_, testing::kBetaToken);
  EXPECT_EQ(code(*beta_a, id, "node-b"), absl::StatusCode::kNotFound)
      << "another tenant's sequence";
  EXPECT_EQ(code(*alpha_a_, id, "node-z"), absl::StatusCode::kNotFound)
      << "a node not in the cluster";
  EXPECT_EQ(code(*alpha_a_, id, "node-a"), absl::StatusCode::kInvalidArgument) << "this node";
  EXPECT_EQ(code(*alpha_a_, id, ""), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(*alpha_a_, id + 1, "node-b"), absl::StatusCode::kNotFound);
  client::MigrateOptions too_long;
  too_long.hold = absl::Minutes(10);
  EXPECT_EQ(alpha_a_->MigrateSequence(id, "node-b", too_long).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A target lease that is not the tenant's on the target: refused there, nothing moved.
  client::MigrateOptions foreign;
  foreign.target_lease_id = 12345;
  EXPECT_EQ(alpha_a_->MigrateSequence(id, "node-b", foreign).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto still = alpha_a_->DescribeSequence(id);
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(still->num_tokens, 4u);
  EXPECT_TRUE(alpha_a_->ReserveSlots(id, 1).ok()) << "writes resume after a refused migration";

  // kvwctl: the operator's way, with the admin token (any tenant's sequence).
  const testing::CommandResult r =
      testing::RunCommand({testing::BinPath("kvwctl"), "--target=" + a_->target(),
                           "--token=" + std::string(testing::kAdminToken), "seq", "migrate",
                           absl::StrCat(id), "--to", "node-b"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("moved to node node-b"));
  EXPECT_EQ(alpha_a_->DescribeSequence(id).status().code(), absl::StatusCode::kNotFound);

  // A daemon outside any cluster has nowhere to migrate to.
  auto single = DaemonProcess::Start(testing::kTestConfig);
  ASSERT_TRUE(single.ok());
  auto alone = Connect(**single, testing::kAlphaToken);
  EXPECT_EQ(code(*alone, 1, "node-b"), absl::StatusCode::kFailedPrecondition);
}

// Handles: a tenant's name for a sequence, resolved from any node, following it across a
// migration and gone with it.
TEST_F(MigrationTest, AHandleResolvesFromAnyNodeFollowsTheSequenceAndGoesWithIt) {
  const uint64_t id = WrittenSequence(8);
  auto published = alpha_a_->PublishHandle(id, "req-42");
  ASSERT_TRUE(published.ok()) << published.status();
  EXPECT_EQ(published->node, "node-a");
  EXPECT_EQ(published->sequence_id, id);
  // The decode side asks its own node: no node or id needed.
  auto found = alpha_b_->ResolveHandle("req-42");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->node, "node-a");
  EXPECT_EQ(found->grpc_address, a_->target());
  EXPECT_EQ(found->sequence_id, id);
  // Tenants' names never meet.
  auto beta_b = Connect(*b_, testing::kBetaToken);
  EXPECT_EQ(beta_b->ResolveHandle("req-42").status().code(), absl::StatusCode::kNotFound);
  // One name, one sequence; one handle per sequence; names are checked.
  const uint64_t other = WrittenSequence(4);
  EXPECT_EQ(alpha_a_->PublishHandle(other, "req-42").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(alpha_a_->PublishHandle(id, "req-43").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(alpha_a_->PublishHandle(other, "a/b").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(alpha_a_->PublishHandle(other, "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(alpha_a_->PublishHandle(id + 12345, "req-44").status().code(),
            absl::StatusCode::kNotFound);
  auto beta_a = Connect(*a_, testing::kBetaToken);
  EXPECT_EQ(beta_a->PublishHandle(other, "mine").status().code(), absl::StatusCode::kNotFound);

  // The handle follows the sequence to B.
  auto moved = alpha_a_->MigrateSequence(id, "node-b");
  ASSERT_TRUE(moved.ok()) << moved.status();
  auto after = alpha_a_->ResolveHandle("req-42");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->node, "node-b");
  EXPECT_EQ(after->grpc_address, b_->target());
  EXPECT_EQ(after->sequence_id, moved->sequence_id);

  // And goes with it.
  ASSERT_TRUE(alpha_b_->ReleaseSequence(moved->sequence_id).ok());
  const absl::Time until = absl::Now() + absl::Seconds(2);
  absl::StatusCode code = absl::StatusCode::kOk;
  while (absl::Now() < until &&
         (code = alpha_a_->ResolveHandle("req-42").status().code()) == absl::StatusCode::kOk) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(code, absl::StatusCode::kNotFound);
  // The name is free again.
  EXPECT_TRUE(alpha_a_->PublishHandle(other, "req-42").ok());
}

TEST_F(MigrationTest, AKilledNodesHandlesGoWithinItsLeaseTtl) {
  auto lease_b = alpha_b_->RegisterWorker("prefill-b", client::Role::kPrefill, 60000);
  ASSERT_TRUE(lease_b.ok());
  auto seq = alpha_b_->CreateSequence(lease_b->id, "main", 64);
  ASSERT_TRUE(seq.ok());
  ASSERT_TRUE(alpha_b_->PublishHandle(seq->id, "on-b").ok());
  ASSERT_TRUE(alpha_a_->ResolveHandle("on-b").ok());
  b_->Kill();
  const absl::Time killed = absl::Now();
  absl::StatusCode code = absl::StatusCode::kOk;
  while (absl::Now() - killed < absl::Seconds(8) &&
         (code = alpha_a_->ResolveHandle("on-b").status().code()) == absl::StatusCode::kOk) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(code, absl::StatusCode::kNotFound);
  EXPECT_LE(absl::Now() - killed, absl::Seconds(3) + absl::Seconds(2)) << "TTL 3 s";
  std::printf("kill -9 to handle gone: %.2f s (TTL 3 s)\n",
              absl::ToDoubleSeconds(absl::Now() - killed));
}

// The transport a node moves sequences over is in its entry and in kvwctl cluster: the
// daemon-served TCP data path, never UCX RMA over TCP.
TEST_F(MigrationTest, NodesPublishHowTheyMoveSequences) {
  auto kv = etcd_client_->Get(NodeKey(kDefaultClusterPrefix, "node-a"));
  ASSERT_TRUE(kv.ok() && kv->has_value());
  v1::NodeInfo info;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage((*kv)->value, &info).ok());
  EXPECT_EQ(info.migration_transport(), "tcp");
  EXPECT_GT(info.data_port(), 0u);
  const testing::CommandResult r =
      testing::RunCommand({testing::BinPath("kvwctl"), etcd_->cluster_flag(), "cluster"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("tcp :", info.data_port())));
}

TEST_F(MigrationTest, HandlesNeedClusterMode) {
  auto single = DaemonProcess::Start(testing::kTestConfig);
  ASSERT_TRUE(single.ok());
  auto alone = Connect(**single, testing::kAlphaToken);
  EXPECT_EQ(alone->ResolveHandle("x").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(alone->PublishHandle(1, "x").status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kvwarden
