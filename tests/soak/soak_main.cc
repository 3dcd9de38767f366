// kvw_soak: many clients of several tenants against one real kvwardend for a number of
// rounds, one tenant misbehaving, clients killed with SIGKILL at random; see
// tests/soak/README in the top-level README ("Soak"). Round 0 runs without the
// attacker: its ReserveSlots p99 is the reference for the rounds with it.
//
//   kvw_soak [--rounds=N] [--seconds=S] [--clients=C] [--no-latency-gate]
//   kvw_soak --worker ...   (one worker process; started by the driver)
//
// Pass: no corrupt byte, no unexpected status, the pool empty and unpinned after every
// round, no fd/thread/RSS growth from the first round with the attacker to the last,
// and (unless --no-latency-gate) the good tenants' p99 within 3x of round 0's.
// Exit 0 on pass, 1 on a failed check, 2 on bad usage.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "kvwarden/v1/admin.grpc.pb.h"
#include "tests/soak/soak_worker.h"
#include "tests/support/process.h"

namespace kvwarden::soak {
namespace {

constexpr const char* kSoakConfig = R"pb(
  admin_token: "soak-admin"
  pools {
    name: "main"
    layout { num_layers: 4 num_kv_heads: 2 head_dim: 32 dtype: DTYPE_FP16 page_tokens: 16 }
    capacity_bytes: 268435456
    chunk_bytes: 1048576
  }
  tenants { name: "t0" token: "t0-token" quota_pages: 8192 weight: 2 }
  tenants { name: "t1" token: "t1-token" quota_pages: 8192 }
  tenants { name: "t2" token: "t2-token" quota_pages: 8192 }
  tenants { name: "mallory" token: "mallory-token" quota_pages: 1024 }
  tenant_limits { max_sequences: 256 max_open_streams: 64 max_transfers: 64 max_attach_connections: 16 }
  leases { default_ttl_ms: 1000 min_ttl_ms: 100 max_ttl_ms: 60000 reap_interval_ms: 50 }
)pb";

struct Proc {
  pid_t pid = -1;
  int out_fd = -1;
  std::string latency_file;
  bool attacker = false;
};

struct DaemonUse {
  uint32_t fds = 0, threads = 0;
  uint64_t rss_kib = 0;
};

DaemonUse Use(pid_t pid) {
  DaemonUse u;
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    std::vector<std::string> f = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() >= 2 && f[0] == "Threads:") (void)absl::SimpleAtoi(f[1], &u.threads);
    if (f.size() >= 2 && f[0] == "VmRSS:") (void)absl::SimpleAtoi(f[1], &u.rss_kib);
  }
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), ec);
       !ec && it != std::filesystem::directory_iterator(); ++it) {
    ++u.fds;
  }
  return u;
}

uint32_t P99(std::vector<uint32_t> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, v.size() * 99 / 100)];
}

int Driver(int rounds, int seconds, int clients, bool latency_gate) {
  testing::TempDir dir;
  const std::string sock = dir.path() + "/attach.sock";
  auto daemon = testing::DaemonProcess::Start(kSoakConfig, {"--attach-socket=" + sock});
  if (!daemon.ok()) {
    std::fprintf(stderr, "kvw_soak: %s\n", std::string(daemon.status().message()).c_str());
    return 1;
  }
  const std::string target = (*daemon)->target();
  auto admin = v1::AdminService::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::mt19937_64 rng(42);
  const int per_proc = 4;
  const int attacker_procs = std::max(1, clients / 4 / per_proc);
  const int good_procs = std::max(3, clients / per_proc - attacker_procs);
  bool pass = true;
  uint32_t base_p99 = 0;
  DaemonUse first_attack{};
  std::printf("%-6s %-9s %8s %8s %8s %10s %10s %6s %8s %8s %9s\n", "round", "attacker", "ops", "corrupt",
              "unexpect", "p50_us", "p99_us", "kills", "fds", "threads", "rss_MiB");
  for (int round = 0; round <= rounds; ++round) {
    const bool attack = round > 0;
    const absl::Time until = absl::Now() + absl::Seconds(seconds);
    int next = 0;
    auto spawn = [&](bool attacker) {
      Proc p;
      p.attacker = attacker;
      const std::string tenant = attacker ? "mallory" : absl::StrCat("t", next % 3);
      p.latency_file = absl::StrCat(dir.path(), "/lat-", round, "-", next++);
      std::vector<std::string> argv = {self, "--worker", "--target=" + target, "--token=" + tenant + "-token",
                                       "--attach-socket=" + sock, "--latency-file=" + p.latency_file,
                                       absl::StrCat("--threads=", per_proc),
                                       absl::StrCat("--until-ms=", absl::ToUnixMillis(until)),
                                       absl::StrCat("--seed=", rng())};
      if (attacker) argv.push_back("--attacker");
      testing::Child c = testing::SpawnWithStdoutPipe(argv);
      p.pid = c.pid;
      p.out_fd = c.stdout_fd;
      return p;
    };
    std::vector<Proc> procs;
    for (int i = 0; i < good_procs; ++i) procs.push_back(spawn(false));
    for (int i = 0; attack && i < attacker_procs; ++i) procs.push_back(spawn(true));
    // Kill a random good worker (mid-transfer, mid-write, whatever it was doing) every
    // third of the round and start another in its place.
    int kills = 0;
    for (int k = 0; k < 2; ++k) {
      absl::SleepFor(absl::Seconds(seconds) / 3);
      const size_t victim = rng() % good_procs;
      kill(procs[victim].pid, SIGKILL);
      waitpid(procs[victim].pid, nullptr, 0);
      close(procs[victim].out_fd);
      procs[victim] = spawn(false);
      ++kills;
    }
    uint64_t ops = 0, corrupt = 0, unexpected = 0;
    std::vector<uint32_t> lat;
    for (Proc& p : procs) {
      std::string report = testing::ReadLine(p.out_fd);
      waitpid(p.pid, nullptr, 0);
      close(p.out_fd);
      std::map<std::string, std::string> kv;
      for (absl::string_view field : absl::StrSplit(report, ' ')) {
        std::pair<std::string, std::string> f = absl::StrSplit(field, absl::MaxSplits('=', 1));
        kv[f.first] = f.second;
      }
      uint64_t x = 0;
      if (absl::SimpleAtoi(kv["ops"], &x)) ops += x;
      if (absl::SimpleAtoi(kv["corrupt"], &x)) corrupt += x;
      if (absl::SimpleAtoi(kv["unexpected"], &x)) unexpected += x;
      if ((kv["first"] != "" && kv["first"] != "-") || (kv["corrupt"] != "" && kv["corrupt"] != "0")) {
        std::fprintf(stderr, "round %d: %s\n", round, report.c_str());
      }
      if (!p.attacker) {
        std::ifstream in(p.latency_file);
        uint32_t us = 0;
        while (in >> us) lat.push_back(us);
      }
    }
    // Killed clients' leases lapse after their TTL (1 s): everything must come back.
    v1::ListPoolsResponse pools;
    bool empty = false;
    for (int i = 0; i < 100 && !empty; ++i) {
      absl::SleepFor(absl::Milliseconds(100));
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", "Bearer soak-admin");
      pools.Clear();
      if (!admin->ListPools(&ctx, {}, &pools).ok()) break;
      empty = pools.pools_size() == 1 && pools.pools(0).used_pages() == 0 && pools.pools(0).pinned_pages() == 0;
    }
    const DaemonUse use = Use((*daemon)->pid());
    std::sort(lat.begin(), lat.end());
    const uint32_t p50 = lat.empty() ? 0 : lat[lat.size() / 2], p99 = P99(lat);
    std::printf("%-6d %-9s %8llu %8llu %8llu %10u %10u %6d %8u %8u %9llu\n", round, attack ? "yes" : "no",
                static_cast<unsigned long long>(ops), static_cast<unsigned long long>(corrupt),
                static_cast<unsigned long long>(unexpected), p50, p99, kills, use.fds, use.threads,
                static_cast<unsigned long long>(use.rss_kib / 1024));
    std::fflush(stdout);
    if (corrupt != 0 || unexpected != 0) pass = false;
    if (!empty) {
      std::fprintf(stderr, "round %d: the pool is not empty/unpinned after the round\n", round);
      pass = false;
    }
    if (round == 0) base_p99 = p99;
    if (round == 1) first_attack = use;
    if (attack && latency_gate && base_p99 > 0 && p99 > 3 * base_p99) {
      std::fprintf(stderr, "round %d: ReserveSlots p99 %u us is over 3x the %u us without the attacker\n", round,
                   p99, base_p99);
      pass = false;
    }
    if (round > 1) {
      if (use.fds > first_attack.fds + 32 || use.threads > first_attack.threads + 8 ||
          use.rss_kib > first_attack.rss_kib + first_attack.rss_kib / 4 + 65536) {
        std::fprintf(stderr, "round %d: daemon grew (fds %u -> %u, threads %u -> %u, RSS %llu -> %llu KiB)\n",
                     round, first_attack.fds, use.fds, first_attack.threads, use.threads,
                     static_cast<unsigned long long>(first_attack.rss_kib),
                     static_cast<unsigned long long>(use.rss_kib));
        pass = false;
      }
    }
  }
  std::printf("soak: %s (%d rounds of %d s, %d clients, ReserveSlots p99 without the attacker %u us)\n",
              pass ? "PASS" : "FAIL", rounds + 1, seconds, (good_procs + attacker_procs) * per_proc, base_p99);
  return pass ? 0 : 1;
}

}  // namespace
}  // namespace kvwarden::soak

int main(int argc, char** argv) {
  using namespace kvwarden::soak;
  WorkerArgs w;
  bool worker = false, latency_gate = true;
  int rounds = 3, seconds = 20, clients = 64;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      return a.rfind(name, 0) == 0 ? argv[i] + std::strlen(name) : nullptr;
    };
    int64_t ms = 0;
    if (a == "--worker") worker = true;
    else if (a == "--attacker") w.attacker = true;
    else if (a == "--no-latency-gate") latency_gate = false;
    else if (const char* v = value("--target=")) w.target = v;
    else if (const char* v = value("--token=")) w.token = v;
    else if (const char* v = value("--attach-socket=")) w.attach_socket = v;
    else if (const char* v = value("--latency-file=")) w.latency_file = v;
    else if (const char* v = value("--threads=")) w.threads = std::atoi(v);
    else if (const char* v = value("--seed=")) w.seed = std::strtoull(v, nullptr, 10);
    else if (const char* v = value("--until-ms=")) { ms = std::atoll(v); w.until = absl::FromUnixMillis(ms); }
    else if (const char* v = value("--rounds=")) rounds = std::atoi(v);
    else if (const char* v = value("--seconds=")) seconds = std::atoi(v);
    else if (const char* v = value("--clients=")) clients = std::atoi(v);
    else {
      std::fprintf(stderr, "kvw_soak: unknown argument %s\nusage: kvw_soak [--rounds=N] [--seconds=S] [--clients=C] [--no-latency-gate]\n", a.c_str());
      return 2;
    }
  }
  if (worker) return RunWorker(w);
  if (rounds < 1 || seconds < 3 || clients < 16) {
    std::fprintf(stderr, "kvw_soak: need --rounds >= 1, --seconds >= 3, --clients >= 16\n");
    return 2;
  }
  return Driver(rounds, seconds, clients, latency_gate);
}
