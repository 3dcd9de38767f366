// Cluster mode's fleet-wide tenants: FleetTenant entries under <prefix>/tenants in a real
// etcd (started here, stopped by pid), written with kvwctl, are served by every node
// within a second; a lowered quota refuses the next reservation on every node; a removed
// tenant's token is refused; bad or conflicting entries change nothing; a node serves
// the tenants it last saw while etcd is down and follows changes once it is back.

#include <stdlib.h>

#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/cluster/cluster_keys.h"
#include "common/cluster/etcd_client.h"
#include "common/codec/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvwarden/admin_client.h"
#include "kvwarden/client.h"
#include "tests/support/etcd_process.h"
#include "tests/support/process.h"
#include "tests/support/test_config.h"

namespace kvwarden {
namespace {

using testing::DaemonProcess;
using testing::EtcdProcess;
using ::testing::HasSubstr;

constexpr char kGammaToken[] = "gamma-token-0123456789";

class FleetTenantsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto etcd = EtcdProcess::Start();
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
    auto client = EtcdClient::Create({{etcd_->endpoint()}, absl::Milliseconds(500)});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    token_file_ = dir_.Write("gamma.token", std::string(kGammaToken) + "\n");
  }

  std::unique_ptr<DaemonProcess> StartNode(const std::string& node,
                                           const std::string& config = testing::kTestConfig) {
    auto d = DaemonProcess::Start(absl::StrCat(config, " cluster { lease_ttl_s: 3 }"),
                                  {etcd_->cluster_flag(), "--node=" + node});
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *std::move(d) : nullptr;
  }

  testing::CommandResult Kvwctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {testing::BinPath("kvwctl"), etcd_->cluster_flag(),
                                     "--token=" + std::string(testing::kAdminToken)};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv);
  }

  // Whether `token` can register a worker on `d` now.
  static absl::StatusCode TokenWorks(const DaemonProcess& d, const std::string& token) {
    auto c = Client::Connect({d.target(), token, absl::Seconds(5)});
    if (!c.ok()) return c.status().code();
    auto lease = (*c)->RegisterWorker("probe", client::Role::kBoth, 1000);
    if (lease.ok()) (void)(*c)->ReleaseWorker(lease->id);
    return lease.status().code();
  }

  // Polls until `token` gets `code` on every node; how long it took (nullopt: not within 10 s).
  static std::optional<absl::Duration> WaitForToken(const std::vector<const DaemonProcess*>& nodes,
                                                    const std::string& token,
                                                    absl::StatusCode code) {
    const absl::Time start = absl::Now();
    while (absl::Now() - start < absl::Seconds(10)) {
      bool all = true;
      for (const DaemonProcess* d : nodes) all = all && TokenWorks(*d, token) == code;
      if (all) return absl::Now() - start;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return std::nullopt;
  }

  // The node's view of tenant `name` (nullopt: it has none).
  static std::optional<v1::TenantInfo> TenantOn(const DaemonProcess& d, const std::string& name) {
    auto admin = client::AdminClient::Connect({d.target(), testing::kAdminToken, absl::Seconds(5)});
    if (!admin.ok()) return std::nullopt;
    auto resp = (*admin)->ListTenants();
    if (!resp.ok()) return std::nullopt;
    for (const v1::TenantInfo& t : resp->tenants()) {
      if (t.name() == name) return t;
    }
    return std::nullopt;
  }

  testing::TempDir dir_;
  std::string token_file_;
  std::unique_ptr<EtcdProcess> etcd_;
  std::unique_ptr<EtcdClient> client_;
};

TEST_F(FleetTenantsTest, ATenantSetInEtcdIsServedEverywhereAndAQuotaCutRefusesAtOnce) {
  std::unique_ptr<DaemonProcess> a = StartNode("node-a");
  std::unique_ptr<DaemonProcess> b = StartNode("node-b");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(TokenWorks(*a, kGammaToken), absl::StatusCode::kUnauthenticated);

  testing::CommandResult r = Kvwctl({"tenants", "set", "gamma", "--token-file", token_file_,
                                     "--quota-pages", "1000", "--weight", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tenant gamma added"));
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_EQ(r.out.find("\\x0a"), std::string::npos) << r.out;
  std::optional<absl::Duration> served =
      WaitForToken({a.get(), b.get()}, kGammaToken, absl::StatusCode::kOk);
  ASSERT_TRUE(served.has_value());
  EXPECT_LT(*served, absl::Seconds(1));
  std::cout << "fleet tenant added -> served by both nodes: " << absl::FormatDuration(*served)
            << "\n";
  // etcd holds the token's digest, never the token.
  auto stored = client_->Get(TenantKey(kDefaultClusterPrefix, "gamma"));
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_THAT((*stored)->value, HasSubstr(Sha256Hex(kGammaToken)));
  EXPECT_THAT((*stored)->value, ::testing::Not(HasSubstr(kGammaToken)));

  // gamma holds pages on node A.
  auto gamma_a = Client::Connect({a->target(), kGammaToken, absl::Seconds(10)});
  ASSERT_TRUE(gamma_a.ok());
  auto lease_a = (*gamma_a)->RegisterWorker("w", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease_a.ok()) << lease_a.status();
  auto seq_a = (*gamma_a)->CreateSequence(lease_a->id, "main", 256);
  ASSERT_TRUE(seq_a.ok()) << seq_a.status();
  ASSERT_TRUE((*gamma_a)->ReserveSlots(seq_a->id, 16).ok());
  std::optional<v1::TenantInfo> on_a = TenantOn(*a, "gamma");
  ASSERT_TRUE(on_a.has_value());
  const uint64_t held = on_a->used_pages();
  ASSERT_GE(held, 2u);
  EXPECT_EQ(on_a->source(), "cluster");
  EXPECT_EQ(on_a->weight(), 3u);

  // The quota cut below what A holds and what B would need: within a second both
  // nodes know it, and the next reservation on each is refused.
  r = Kvwctl({"tenants", "set", "gamma", "--quota-pages", absl::StrCat(held - 1)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tenant gamma changed"));
  const absl::Time cut = absl::Now();
  absl::Duration applied = absl::InfiniteDuration();
  while (absl::Now() - cut < absl::Seconds(10)) {
    std::optional<v1::TenantInfo> ta = TenantOn(*a, "gamma"), tb = TenantOn(*b, "gamma");
    if (ta && tb && ta->quota_pages() == held - 1 && tb->quota_pages() == held - 1) {
      applied = absl::Now() - cut;
      break;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_LT(applied, absl::Seconds(1));
  std::cout << "quota cut -> in force on both nodes: " << absl::FormatDuration(applied) << "\n";
  EXPECT_EQ((*gamma_a)->ReserveSlots(seq_a->id, 16).status().code(),
            absl::StatusCode::kResourceExhausted);
  auto gamma_b = Client::Connect({b->target(), kGammaToken, absl::Seconds(10)});
  ASSERT_TRUE(gamma_b.ok());
  auto lease_b = (*gamma_b)->RegisterWorker("w", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease_b.ok());
  auto seq_b = (*gamma_b)->CreateSequence(lease_b->id, "main", 256);
  ASSERT_TRUE(seq_b.ok());
  EXPECT_EQ((*gamma_b)->ReserveSlots(seq_b->id, 16).status().code(),
            absl::StatusCode::kResourceExhausted);
  // What A held stays held: a quota cut never takes pages back.
  EXPECT_EQ(TenantOn(*a, "gamma")->used_pages(), held);

  // kvwctl sums the nodes: gamma on both, its pages added up.
  r = Kvwctl({"tenants"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("gamma"));
  EXPECT_THAT(r.out, HasSubstr("2/2"));
  EXPECT_THAT(r.out, HasSubstr("2 of 2 nodes answered"));
  r = Kvwctl({"--json", "tenants"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("\"name\": \"gamma\", \"source\": \"cluster\"")));
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("\"used_pages\": ", held)));
  EXPECT_THAT(r.out, HasSubstr("\"name\": \"alpha\", \"source\": \"config\""));

  // Removed: both nodes refuse the token within a second; A lists what gamma still holds.
  r = Kvwctl({"tenants", "rm", "gamma"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::optional<absl::Duration> refused =
      WaitForToken({a.get(), b.get()}, kGammaToken, absl::StatusCode::kUnauthenticated);
  ASSERT_TRUE(refused.has_value());
  EXPECT_LT(*refused, absl::Seconds(1));
  std::cout << "fleet tenant removed -> refused by both nodes: " << absl::FormatDuration(*refused)
            << "\n";
  r = testing::RunCommand({testing::BinPath("kvwctl"), "--target=" + a->target(),
                           "--token=" + std::string(testing::kAdminToken), "tenants"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("cluster (removed)"));
  r = Kvwctl({"tenants", "rm", "gamma"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND: no fleet-wide tenant"));
}

TEST_F(FleetTenantsTest, BadOrConflictingEntriesAreRefusedAndChangeNothing) {
  std::unique_ptr<DaemonProcess> a = StartNode("node-a");
  ASSERT_TRUE(a);
  const std::string other_token_hash = Sha256Hex("another-alpha-token");
  auto put = [&](const std::string& name, const std::string& json) {
    ASSERT_TRUE(client_->Put(TenantKey(kDefaultClusterPrefix, name), json).ok());
  };
  // A config tenant's name: the config wins; neither token changes.
  put("alpha", absl::StrCat(R"({"token_sha256": ")", other_token_hash, R"(", "quota_pages": 1})"));
  // Another tenant's token, a broken digest, no quota, not JSON, a name unlike the key's.
  put("delta", absl::StrCat(R"({"token_sha256": ")", Sha256Hex(testing::kBetaToken),
                            R"(", "quota_pages": 5})"));
  put("eps", R"({"token_sha256": "zz", "quota_pages": 5})");
  put("zeta", absl::StrCat(R"({"token_sha256": ")", Sha256Hex("zeta-token"), R"("})"));
  put("eta", "not json");
  put("theta", absl::StrCat(R"({"name": "iota", "token_sha256": ")", Sha256Hex("theta-token"),
                            R"(", "quota_pages": 5})"));
  // A good one, then a bad change to it: it keeps its last good entry.
  put("kappa",
      absl::StrCat(R"({"token_sha256": ")", Sha256Hex("kappa-token"), R"(", "quota_pages": 7})"));
  ASSERT_TRUE(WaitForToken({a.get()}, "kappa-token", absl::StatusCode::kOk).has_value());
  put("kappa",
      absl::StrCat(R"({"token_sha256": ")", Sha256Hex("kappa-token"), R"(", "quota_pages": 0})"));
  absl::SleepFor(absl::Milliseconds(500));  // well past the watch's delivery

  EXPECT_EQ(TokenWorks(*a, testing::kAlphaToken), absl::StatusCode::kOk);
  EXPECT_EQ(TokenWorks(*a, "another-alpha-token"), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(TenantOn(*a, "alpha")->source(), "config");
  EXPECT_EQ(TenantOn(*a, "alpha")->quota_pages(), 4096u);
  EXPECT_EQ(TokenWorks(*a, testing::kBetaToken), absl::StatusCode::kOk);
  for (const char* name : {"eps", "zeta", "eta", "theta", "iota"}) {
    EXPECT_FALSE(TenantOn(*a, name).has_value()) << name;
  }
  std::optional<v1::TenantInfo> delta = TenantOn(*a, "delta");
  EXPECT_TRUE(!delta || delta->removed());
  EXPECT_EQ(TenantOn(*a, "kappa")->quota_pages(), 7u);
  EXPECT_EQ(TokenWorks(*a, "kappa-token"), absl::StatusCode::kOk);
  const std::string log = a->log();
  EXPECT_THAT(log, HasSubstr("fleet_tenant_refused"));
  EXPECT_THAT(log, HasSubstr("defined in this node's config"));
  EXPECT_THAT(log, HasSubstr("another tenant has the same token"));
  EXPECT_THAT(log, HasSubstr("token_sha256 must be 64 hex digits"));

  // kvwctl's own checks: exit 2 with one line, nothing written.
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"tenants", "set", "mu", "--quota-pages", "4"}, "is new: give its token"},
      {{"tenants", "set", "mu", "--token-file", token_file_},
       "needs --quota-bytes or --quota-pages"},
      {{"tenants", "set", "mu", "--token-sha256", "abc", "--quota-pages", "4"}, "64 hex digits"},
      {{"tenants", "set", "m/u", "--token-file", token_file_, "--quota-pages", "4"},
       "must be 1-64 of"},
  };
  for (const Case& c : cases) {
    testing::CommandResult r = Kvwctl(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.message << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_FALSE(client_->Get(TenantKey(kDefaultClusterPrefix, "mu"))->has_value());
  testing::CommandResult r =
      testing::RunCommand({testing::BinPath("kvwctl"), "tenants", "rm", "mu"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--cluster=etcd://HOST:PORT"));
}

TEST_F(FleetTenantsTest, ANodeKeepsItsTenantsWhileEtcdIsDownAndFollowsChangesAfter) {
  // A node whose config has no tenant of its own: it serves the fleet's.
  const std::string no_tenants = R"pb(
    admin_token: "test-admin"
    pools {
      name: "main"
      layout { num_layers: 4 num_kv_heads: 2 head_dim: 16 dtype: DTYPE_FP16 page_tokens: 4 }
      capacity_pages: 1024
      chunk_bytes: 32768
    }
  )pb";
  ASSERT_EQ(Kvwctl({"tenants", "set", "gamma", "--token-file", token_file_, "--quota-pages", "100"})
                .exit_code,
            0);
  std::unique_ptr<DaemonProcess> a = StartNode("node-a", no_tenants);
  ASSERT_TRUE(a);
  // Listed at start, before the daemon answers: gamma's first call is served.
  EXPECT_EQ(TokenWorks(*a, kGammaToken), absl::StatusCode::kOk);

  etcd_->Stop();
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(TokenWorks(*a, kGammaToken), absl::StatusCode::kOk) << "while etcd is down";
    absl::SleepFor(absl::Milliseconds(300));
  }
  ASSERT_TRUE(etcd_->Restart(false).ok());
  testing::CommandResult r;
  for (int i = 0; i < 50; ++i) {
    r = Kvwctl({"tenants", "set", "gamma", "--quota-pages", "42"});
    if (r.exit_code == 0) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const absl::Time start = absl::Now();
  while (absl::Now() - start < absl::Seconds(15)) {
    std::optional<v1::TenantInfo> t = TenantOn(*a, "gamma");
    if (t && t->quota_pages() == 42) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(TenantOn(*a, "gamma")->quota_pages(), 42u) << a->log();

  // Without cluster mode a config with no tenant is refused, in one line.
  testing::TempDir dir;
  const std::string config = dir.Write("c.textproto", no_tenants);
  r = testing::RunCommand(
      {testing::BinPath("kvwardend"), "--config=" + config, "--listen=127.0.0.1:0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("tenants: at least one tenant is required"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace
}  // namespace kvwarden
