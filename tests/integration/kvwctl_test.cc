// The real kvwctl against the real daemon: tables, --json, and the documented exit
// codes with one readable line for each failure.

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/net/tcp_listen.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kernels/copy_kv.h"
#include "kvwarden/client.h"
#include "kvwarden/v1/admin.grpc.pb.h"
#include "tests/support/process.h"
#include "tests/support/test_config.h"

namespace kvwarden {
namespace {

using testing::BinPath;
using testing::CommandResult;
using testing::DaemonProcess;
using ::testing::HasSubstr;
using testing::RunCommand;

void ExpectOneLineStatic(const std::string& err) {
  ASSERT_FALSE(err.empty());
  EXPECT_EQ(err.find('\n'), err.size() - 1) << err;
}

class KvwctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto d = DaemonProcess::Start(testing::kTestConfig);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = d->release();
    auto c = Client::Connect({daemon_->target(), testing::kBetaToken, absl::Seconds(10)});
    client_ = c->release();
    auto lease = client_->RegisterWorker("decoder-7", client::Role::kDecode, 60000);
    ASSERT_TRUE(lease.ok());
    auto seq = client_->CreateSequence(lease->id, "main", 100);
    ASSERT_TRUE(seq.ok());
    seq_id_ = seq->id;
    ASSERT_TRUE(client_->ReserveSlots(seq_id_, 10).ok());
  }
  static void TearDownTestSuite() {
    delete client_;
    delete daemon_;
  }
  CommandResult Ctl(std::vector<std::string> args, bool with_token = true) {
    std::vector<std::string> argv = {BinPath("kvwctl"), "--target=" + daemon_->target()};
    if (with_token) argv.push_back("--token=" + std::string(testing::kAdminToken));
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }
  static void ExpectOneLine(const std::string& err) { ExpectOneLineStatic(err); }

  static DaemonProcess* daemon_;
  static Client* client_;
  static uint64_t seq_id_;
};

DaemonProcess* KvwctlTest::daemon_ = nullptr;
Client* KvwctlTest::client_ = nullptr;
uint64_t KvwctlTest::seq_id_ = 0;

TEST_F(KvwctlTest, Health) {
  CommandResult r = Ctl({"health"}, /*with_token=*/false);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SERVING"));
  EXPECT_THAT(r.out, HasSubstr("kvwardend 0.1.0"));
  r = Ctl({"--json", "health"});
  EXPECT_THAT(r.out, HasSubstr("\"status\": \"SERVING\""));
}

TEST_F(KvwctlTest, PoolsAndTenantsTables) {
  CommandResult r = Ctl({"pools"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("main  cpu"));
  EXPECT_THAT(r.out, HasSubstr("4x2x16 fp16 /4"));
  EXPECT_THAT(r.out, HasSubstr("main  beta"));  // per-tenant chunk usage
  r = Ctl({"tenants"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("beta    config  1       64 pages"));
  r = Ctl({"--json", "tenants"});
  EXPECT_THAT(r.out, HasSubstr("\"name\": \"alpha\""));
  EXPECT_THAT(r.out, HasSubstr("\"used_pages\": 12"));  // beta: 3 pages x 4 layers (a number)
  r = Ctl({"workers"});
  EXPECT_THAT(r.out, HasSubstr("decoder-7"));
  EXPECT_THAT(r.out, HasSubstr("decode"));
  EXPECT_EQ(r.out.find("WORKER_ROLE"), std::string::npos) << r.out;
}

TEST_F(KvwctlTest, SequencesAndShow) {
  CommandResult r = Ctl({"seqs", "--tenant", "beta"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::ContainsRegex(std::to_string(seq_id_) + " +beta"));
  r = Ctl({"seqs", "--tenant", "alpha"});
  EXPECT_EQ(r.out.find("beta"), std::string::npos);
  r = Ctl({"seq", "show", std::to_string(seq_id_)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tokens     10 of max 100   epoch 0   pages 12"));
  EXPECT_THAT(r.out, HasSubstr("H0 live/budget"));
  EXPECT_THAT(r.out, HasSubstr("3      3      10/100"));  // layer 3: 3 pages, head 0: 10 of 100
  r = Ctl({"seq", "watch", std::to_string(seq_id_), "--count=2", "--interval-ms=10"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  size_t shows = 0;
  for (size_t at = 0; (at = r.out.find("policy     full", at)) != std::string::npos; ++at) ++shows;
  EXPECT_EQ(shows, 2u) << r.out;
  EXPECT_EQ(r.out.find("\033["), std::string::npos) << "clear-screen codes into a pipe";
  EXPECT_EQ(Ctl({"seq", "watch", "99999", "--count=1"}).exit_code, 1);
  r = Ctl({"--json", "seq", "show", std::to_string(seq_id_)});
  EXPECT_THAT(r.out, HasSubstr("\"live_slots\": 10"));
  EXPECT_THAT(r.out, HasSubstr("\"budget\": 100"));
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("\"sequence_id\": ", seq_id_)));  // 64-bit: a number
  // Watching as JSON: one object per line, one line per refresh.
  r = Ctl({"--json", "seq", "watch", std::to_string(seq_id_), "--count=2", "--interval-ms=10"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2) << r.out;
  EXPECT_EQ(r.out.rfind("{\"sequence_id\":", 0), 0u) << r.out;
}

TEST_F(KvwctlTest, ExitCodesAndOneLineErrors) {
  CommandResult r = Ctl({"seq", "show", "99999"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "kvwctl: NOT_FOUND: sequence 99999 not found\n");
  r = Ctl({"pools"}, /*with_token=*/false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  ExpectOneLine(r.err);
  r = RunCommand(
      {BinPath("kvwctl"), "--target=" + daemon_->target(), "--token=beta-token", "pools"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "kvwctl: PERMISSION_DENIED: admin calls need the admin token\n");
  r = Ctl({"seqs", "--tenant", "nobody"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "kvwctl: NOT_FOUND: tenant 'nobody' not found\n");
  r = RunCommand({BinPath("kvwctl"), "--target=127.0.0.1:1", "--timeout-ms=2000", "health"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_THAT(r.err, HasSubstr("kvwctl: cannot reach daemon: UNAVAILABLE"));
  ExpectOneLine(r.err);
  // Usage errors: exit 2, one line, the unknown command named.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"seq", "show", "notanumber"}, {"frobnicate"}, {}, {"seq"}}) {
    r = Ctl(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    ExpectOneLine(r.err);
  }
  EXPECT_EQ(Ctl({"--json", "frobnicate"}).err,
            "kvwctl: unknown command 'frobnicate' (kvwctl --help lists them)\n");
  EXPECT_EQ(Ctl({"--help"}).exit_code, 0);
  // TLS flags that cannot work together are usage errors, not a connection failure.
  const std::string some_file = BinPath("kvwctl");
  r = Ctl({"--tls-cert", some_file, "pools"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--tls-cert and --tls-key go together"));
  ExpectOneLine(r.err);
  r = Ctl({"--tls-cert", some_file, "--tls-key", some_file, "pools"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("need --tls-ca"));
  ExpectOneLine(r.err);
}

TEST(KvwardendCliTest, CudaPoolWithoutADeviceRefusesToStart) {
#if defined(KVW_CUDA_EMULATOR)
  // The emulated runtime can hide its device: the daemon then sees none, as CI's would.
  setenv("KVW_CUDA_EMULATOR_DEVICES", "0", 1);
  struct Restore {
    ~Restore() { unsetenv("KVW_CUDA_EMULATOR_DEVICES"); }
  } restore;
#else
  if (kernels::CudaDeviceAvailable()) GTEST_SKIP() << "a CUDA device is visible";
#endif
  testing::TempDir dir;
  const std::string cfg = dir.Write("gpu.textproto", R"pb(
    admin_token: "a"
    pools {
      name: "gpu"
      device: "cuda:0"
      layout { num_layers: 1 num_kv_heads: 1 head_dim: 8 dtype: DTYPE_FP16 page_tokens: 16 }
      capacity_pages: 4096
      chunk_bytes: 2097152
    }
    tenants { name: "t" token: "t" quota_pages: 8 }
  )pb");
  CommandResult r = RunCommand({BinPath("kvwardend"), "--config=" + cfg, "--listen=127.0.0.1:0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("kvwardend: pool 'gpu': cuda:0"));
  ExpectOneLineStatic(r.err);
}

TEST(KvwardendCliTest, BadListenAddressesAreNamedAsTheFlagAndAPortInUseExitsOne) {
  testing::TempDir dir;
  const std::string cfg = dir.Write("c.textproto", testing::kTestConfig);
  CommandResult r = RunCommand({BinPath("kvwardend"), "--config=" + cfg, "--listen=badhost:99999"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "kvwardend: --listen: 'badhost:99999': port '99999' is not in [0, 65535]\n");
  r = RunCommand({BinPath("kvwardend"), "--config=" + cfg, "--listen=no-such-host.invalid:5000"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("kvwardend: --listen: 'no-such-host.invalid:5000': "));
  ExpectOneLineStatic(r.err);
  r = RunCommand(
      {BinPath("kvwardend"), "--config=" + cfg, "--listen=127.0.0.1:0", "--metrics=127.0.0.1:x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("kvwardend: --metrics: '127.0.0.1:x': port 'x'"));
  // A metrics port someone else holds: the daemon could not start (1), not a bad flag (2).
  auto busy = net::ListenTcp("127.0.0.1:0");
  ASSERT_TRUE(busy.ok());
  r = RunCommand({BinPath("kvwardend"), "--config=" + cfg, "--listen=127.0.0.1:0",
                  absl::StrCat("--metrics=127.0.0.1:", busy->port)});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  // (after the pools' start-up log lines) one line saying why.
  EXPECT_THAT(r.err, HasSubstr("\nkvwardend: metrics: cannot listen on 127.0.0.1:"));
}

TEST(KvwardendCliTest, BadConfigExitsTwoWithFileFieldReason) {
  testing::TempDir dir;
  const std::string bad = dir.Write(
      "bad.textproto", "admin_token: \"a\"\npools { name: \"p\" layout { num_layers: 0 } }\n");
  CommandResult r = RunCommand({BinPath("kvwardend"), "--config=" + bad});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "kvwardend: bad config: " + bad +
                       ": pools[0].layout.num_layers: must be in [1, 1024], got 0\n");
  r = RunCommand({BinPath("kvwardend"), "--config=" + dir.path() + "/missing.textproto"});
  EXPECT_EQ(r.exit_code, 2);
  r = RunCommand({BinPath("kvwardend")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--config is required"));
  r = RunCommand({BinPath("kvwardend"), "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--ready-file"));
  EXPECT_THAT(r.out, HasSubstr("Exit codes"));
}

TEST_F(KvwctlTest, DrainRefusesNewSequencesAndTurnsHealthOnceEveryPoolDrains) {
  auto lease = client_->RegisterWorker("drain-test", client::Role::kBoth, 60000);
  ASSERT_TRUE(lease.ok());
  auto existing = client_->CreateSequence(lease->id, "main", 100);
  ASSERT_TRUE(existing.ok());
  CommandResult r = Ctl({"drain", "main"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("pool main: draining"));
  auto refused = client_->CreateSequence(lease->id, "main", 100);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused.status().message(), HasSubstr("pool 'main' is draining"));
  EXPECT_TRUE(client_->ReserveSlots(existing->id, 4).ok());         // existing ones go on
  EXPECT_TRUE(client_->CreateSequence(lease->id, "big", 16).ok());  // other pools serve
  EXPECT_EQ(Ctl({"health"}).exit_code, 0);
  ASSERT_EQ(Ctl({"drain", "big"}).exit_code, 0);
  r = Ctl({"health"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("NOT_SERVING"));
  EXPECT_THAT(r.out, HasSubstr("pool big: draining"));
  // Liveness stays SERVING through a full drain (the DaemonSet's livenessProbe asks for
  // it): a draining daemon is not restarted and keeps what the drain lets finish.
  {
    auto channel = grpc::CreateChannel(daemon_->target(), grpc::InsecureChannelCredentials());
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    req.set_service("kvwarden.liveness");
    grpc::ClientContext ctx;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    req.set_service("");
    grpc::ClientContext ctx2;
    ASSERT_TRUE(health->Check(&ctx2, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  }
  r = Ctl({"--json", "pools"});
  EXPECT_THAT(r.out, HasSubstr("\"draining\": true"));
  ASSERT_EQ(Ctl({"undrain", "main"}).exit_code, 0);
  ASSERT_EQ(Ctl({"undrain", "big"}).exit_code, 0);
  EXPECT_EQ(Ctl({"health"}).exit_code, 0);
  EXPECT_TRUE(client_->CreateSequence(lease->id, "main", 100).ok());
  r = Ctl({"drain", "nope"});
  EXPECT_EQ(r.exit_code, 1);
  ExpectOneLine(r.err);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND: pool 'nope' not found"));
  EXPECT_EQ(Ctl({"drain", "main"}, /*with_token=*/false).exit_code, 1);  // admin only
  EXPECT_EQ(Ctl({"health"}).exit_code, 0);
  (void)client_->ReleaseWorker(lease->id);
}

TEST_F(KvwctlTest, ConfigTopAndCompletion) {
  CommandResult r = Ctl({"config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("name: \"main\""));
  EXPECT_THAT(r.out, HasSubstr("<redacted>"));
  for (const char* token : {testing::kAdminToken, testing::kAlphaToken, testing::kBetaToken}) {
    EXPECT_EQ(r.out.find(token), std::string::npos) << token;
  }
  r = Ctl({"--json", "config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"config\": {"));  // an object, not a text blob
  EXPECT_THAT(r.out, HasSubstr("\"name\": \"main\""));
  EXPECT_THAT(r.out, HasSubstr("\"quota_pages\": 4096"));
  EXPECT_EQ(r.out.find(testing::kAlphaToken), std::string::npos);
  r = Ctl({"--json", "top", "--count=2", "--interval-ms=50"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"quota_bytes\":"));
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("\"tenant\":\"beta\""));
  EXPECT_THAT(r.out, HasSubstr("\"refusals_per_s\":"));
  r = Ctl({"top", "--count=1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("REFUSED/S"));
  r = Ctl({"completion", "bash"}, /*with_token=*/false);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("complete -F _kvwctl kvwctl"));
  EXPECT_THAT(r.out, HasSubstr("drain"));
  const std::string script = ::testing::TempDir() + "/kvwctl-completion.bash";
  FILE* f = std::fopen(script.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(r.out.c_str(), f);
  std::fclose(f);
  EXPECT_EQ(RunCommand({"/bin/bash", "-n", script}).exit_code, 0);  // it parses
  // What bash offers after each prefix: aliases, a nested subcommand's flags, the shell.
  const auto offered = [&](const std::string& words, int cword) {
    return RunCommand({"/bin/bash", "-c",
                       absl::StrCat("source ", script, "; COMP_WORDS=(", words, "); COMP_CWORD=",
                                    cword, "; _kvwctl; echo \"${COMPREPLY[*]}\"")})
        .out;
  };
  EXPECT_THAT(offered("kvwctl le", 1), HasSubstr("leases"));
  EXPECT_THAT(offered("kvwctl seq watch --", 3), HasSubstr("--interval-ms"));
  EXPECT_THAT(offered("kvwctl seq watch --", 3), HasSubstr("--count"));
  EXPECT_THAT(offered("kvwctl completion b", 2), HasSubstr("bash"));
  EXPECT_EQ(Ctl({"completion", "fish"}, false).exit_code, 2);
}

}  // namespace
}  // namespace kvwarden

namespace kvwarden {
namespace {

// Issue 24, finding 9: a worker named with terminal escapes and a newline made
// `kvwctl workers` clear the screen and print a forged row. Server strings are escaped.
TEST_F(KvwctlTest, ServerStringsCannotDriveTheTerminal) {
  auto lease = client_->RegisterWorker(
      "evil\x1b[2J\x1b[H\nforged-row\xc2\x9b"
      "31m",
      client::Role::kBoth, 60000);
  ASSERT_TRUE(lease.ok()) << lease.status();
  CommandResult r = Ctl({"workers"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\xc2\x9b"), std::string::npos) << r.out;
  EXPECT_THAT(r.out, HasSubstr("evil\\x1b[2J\\x1b[H\\x0aforged-row\\u009b31m"));
  // No line of the table starts with the forged text.
  EXPECT_EQ(r.out.find("\nforged-row"), std::string::npos) << r.out;
  ASSERT_TRUE(client_->ReleaseWorker(lease->id).ok());
}

// Finding 10: kvwctl followed an endless next_page_token and grew without bound. A
// fake AdminService answering the same token forever gets exit 1 and one line.
class EndlessPages final : public v1::AdminService::Service {
 public:
  grpc::Status ListSequences(grpc::ServerContext*, const v1::ListSequencesRequest*,
                             v1::ListSequencesResponse* resp) override {
    resp->add_sequences()->set_sequence_id(++calls_);
    resp->set_next_page_token("again");
    return grpc::Status::OK;
  }

 private:
  std::atomic<uint64_t> calls_{0};
};

TEST(KvwctlFakeServerTest, EndlessPageTokensStopWithAnError) {
  EndlessPages service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(port, 0);
  CommandResult r = RunCommand(
      {BinPath("kvwctl"), absl::StrCat("--target=127.0.0.1:", port), "--token=x", "seqs"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("page tokens do not end"));
  ExpectOneLineStatic(r.err);
  server->Shutdown();
}

}  // namespace
}  // namespace kvwarden
