// bench_migration: a sequence moving daemon to daemon (cluster mode) next to its
// references, measured in the same run: a real etcd and two kvwardends on loopback, one
// Llama-shaped sequence (default 32 layers x 8 KV heads x 128 dim fp16, 4,096 tokens:
// 512 MiB) migrated back and forth --rounds times.
//   migration GB/s: page bytes over the whole MigrateSequence call as the client sees it
//     (etcd lookup, pinning, checksums on both sides, the copy over the source's TCP data
//     path, adoption) next to one iperf3 TCP stream on the same loopback (goal >= 0.8);
//   hand-off p50: from MigrateSequence to the decode worker's first read of the
//     sequence on the target (one token of one layer);
//   ResolveHandle p50 (asked of the node without the sequence: an etcd read behind it)
//     next to an empty gRPC call to the same node (goal <= 2x);
//   CRC-32C GB/s next to memcpy of the same bytes (what checking every page costs).
// Prints "row|..." lines for scripts/bench.sh.
//
// Usage: bench_migration [--layers=32] [--tokens=4096] [--rounds=3] [--no-iperf]

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/codec/checked_record.h"
#include "kvwarden/client.h"
#include "tests/support/etcd_process.h"
#include "tests/support/process.h"

namespace kvwarden {
namespace {

constexpr uint32_t kHeads = 8, kDim = 128, kPageTokens = 16;
constexpr const char* kToken = "bench-token";

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// One iperf3 TCP stream on loopback for 2 s: GB/s received; 0 when iperf3 is missing.
double IperfGBps() {
  const int port = 20000 + static_cast<int>(absl::ToUnixNanos(absl::Now()) % 20000);
  testing::Child server =
      testing::SpawnWithStdoutPipe({"/usr/bin/iperf3", "-s", "-1", "-p", absl::StrCat(port)});
  if (server.pid < 0) return 0;
  absl::SleepFor(absl::Milliseconds(300));
  const testing::CommandResult r = testing::RunCommand(
      {"/usr/bin/iperf3", "-c", "127.0.0.1", "-p", absl::StrCat(port), "-t", "2", "-J"});
  waitpid(server.pid, nullptr, 0);
  close(server.stdout_fd);
  // "sum_received": { ..., "bits_per_second": N, ... }
  const size_t at = r.out.find("\"sum_received\"");
  if (r.exit_code != 0 || at == std::string::npos) return 0;
  const size_t key = r.out.find("\"bits_per_second\":", at);
  if (key == std::string::npos) return 0;
  return std::strtod(r.out.c_str() + key + 18, nullptr) / 8 / 1e9;
}

// CRC-32C and memcpy of `bytes` from one buffer: GB/s each, best of 3.
std::pair<double, double> CrcAndMemcpyGBps(size_t bytes) {
  std::string src(bytes, '\0'), dst(bytes, '\0');
  for (size_t i = 0; i < bytes; ++i) src[i] = static_cast<char>(i * 131 + (i >> 12));
  double crc = 0, copy = 0;
  for (int i = 0; i < 3; ++i) {
    absl::Time t = absl::Now();
    volatile uint32_t sink = Crc32c(src);
    (void)sink;
    crc = std::max(crc, bytes / 1e9 / absl::ToDoubleSeconds(absl::Now() - t));
    t = absl::Now();
    std::memcpy(dst.data(), src.data(), bytes);
    copy = std::max(copy, bytes / 1e9 / absl::ToDoubleSeconds(absl::Now() - t));
  }
  return {crc, copy};
}

int Run(uint32_t layers, uint32_t tokens, int rounds, bool iperf) {
  const uint64_t page_bytes = 2ull * kHeads * kPageTokens * kDim * 2;
  const uint64_t pages = uint64_t{layers} * ((tokens + kPageTokens - 1) / kPageTokens);
  const uint64_t seq_bytes = pages * page_bytes;
  const uint64_t chunk = 64ull << 20;
  const uint64_t capacity = (seq_bytes + seq_bytes / 4 + chunk) / chunk * chunk;
  const std::string config = absl::StrCat(
      "admin_token: \"bench-admin\"\n"
      "pools { name: \"llama\" layout { num_layers: ",
      layers, " num_kv_heads: ", kHeads, " head_dim: ", kDim,
      " dtype: DTYPE_FP16 page_tokens: ", kPageTokens, " } capacity_bytes: ", capacity,
      " chunk_bytes: ", chunk,
      " }\n"
      "tenants { name: \"bench\" token: \"",
      kToken, "\" quota_bytes: ", capacity,
      " }\n"
      "leases { max_ttl_ms: 300000 }\n"
      "cluster { peer_token: \"bench-peer-secret\" }\n");
  auto etcd = testing::EtcdProcess::Start();
  if (!etcd.ok()) {
    std::fprintf(stderr, "etcd: %s\n", std::string(etcd.status().message()).c_str());
    return 1;
  }
  std::unique_ptr<testing::DaemonProcess> nodes[2];
  std::unique_ptr<Client> clients[2];
  const char* names[2] = {"bench-a", "bench-b"};
  for (int i = 0; i < 2; ++i) {
    auto d = testing::DaemonProcess::Start(
        config, {(*etcd)->cluster_flag(), absl::StrCat("--node=", names[i])});
    if (!d.ok()) {
      std::fprintf(stderr, "kvwardend: %s\n", std::string(d.status().message()).c_str());
      return 1;
    }
    nodes[i] = *std::move(d);
    clients[i] = *Client::Connect({nodes[i]->target(), kToken, absl::Seconds(120)});
  }
  auto lease = clients[0]->RegisterWorker("prefill", client::Role::kPrefill, 300000);
  auto seq = lease.ok() ? clients[0]->CreateSequence(lease->id, "llama", tokens)
                        : absl::StatusOr<client::Sequence>(lease.status());
  if (!seq.ok() || !clients[0]->ReserveSlots(seq->id, tokens).ok()) {
    std::fprintf(stderr, "sequence: %s\n", std::string(seq.status().message()).c_str());
    return 1;
  }
  // Prefill: every layer's K/V, one layer per call.
  std::string kv(size_t{kHeads} * tokens * kDim * 2, '\0');
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = static_cast<char>(i * 2654435761u >> 13);
  for (uint32_t layer = 0; layer < layers; ++layer) {
    const absl::Span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(kv.data()), kv.size());
    if (absl::Status s =
            clients[0]->WriteKV(seq->id, seq->layout, layer, 1, 0, tokens, bytes, bytes);
        !s.ok()) {
      std::fprintf(stderr, "WriteKV: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  // Each node must see the other in etcd before the first move.
  absl::SleepFor(absl::Milliseconds(500));

  std::vector<double> gbps, handoff_ms, daemon_ms;
  uint64_t id = seq->id;
  int at = 0;
  for (int r = 0; r < 2 * rounds; ++r) {
    const int to = 1 - at;
    const absl::Time t0 = absl::Now();
    auto moved = clients[at]->MigrateSequence(id, names[to]);
    const absl::Time t1 = absl::Now();
    if (!moved.ok()) {
      std::fprintf(stderr, "migrate %s -> %s: %s\n", names[at], names[to],
                   std::string(moved.status().message()).c_str());
      return 1;
    }
    auto first = clients[to]->ReadKV(moved->sequence_id, 0, 1, 0, 1);
    const absl::Time t2 = absl::Now();
    if (!first.ok()) {
      std::fprintf(stderr, "first read: %s\n", std::string(first.status().message()).c_str());
      return 1;
    }
    gbps.push_back(moved->bytes_moved / 1e9 / absl::ToDoubleSeconds(t1 - t0));
    daemon_ms.push_back(absl::ToDoubleMilliseconds(moved->duration));
    handoff_ms.push_back(absl::ToDoubleMilliseconds(t2 - t0));
    std::printf("move %d %s -> %s: %.3f GB/s (%llu bytes, %.1f ms in the source daemon)\n", r,
                names[at], names[to], gbps.back(),
                static_cast<unsigned long long>(moved->bytes_moved), daemon_ms.back());
    id = moved->sequence_id;
    at = to;
  }
  // Handle lookup, asked of the node that does not hold the sequence (an etcd read
  // behind it), next to an empty call to the same node.
  absl::StatusOr<client::Handle> published;
  for (int i = 0; i < 100 && !(published = clients[at]->PublishHandle(id, "bench-request")).ok();
       ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  if (!published.ok()) {
    std::fprintf(stderr, "PublishHandle: %s\n", std::string(published.status().message()).c_str());
    return 1;
  }
  std::vector<double> resolve_us, ping_us;
  for (int i = 0; i < 300; ++i) {
    absl::Time t = absl::Now();
    if (!clients[1 - at]->ResolveHandle("bench-request").ok()) return 1;
    resolve_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
    t = absl::Now();
    if (!clients[1 - at]->Ping().ok()) return 1;
    ping_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
  }
  const double iperf_gbps = iperf ? IperfGBps() : 0;
  const auto [crc, copy] = CrcAndMemcpyGBps(std::min<uint64_t>(seq_bytes, 256ull << 20));
  const double best = *std::max_element(gbps.begin(), gbps.end());
  std::printf("summary\n");
  const std::string shape = absl::StrCat(layers, "x", kHeads, "x", kDim, " fp16, ", tokens,
                                         " tokens (", seq_bytes >> 20, " MiB)");
  if (iperf_gbps > 0) {
    std::printf(
        "row|bench_migration|migration over TCP, %s, best|%.2f GB/s|%.2f GB/s iperf3|%.2fx|>= "
        "0.8x\n",
        shape.c_str(), best, iperf_gbps, best / iperf_gbps);
    std::printf(
        "row|bench_migration|migration over TCP, median|%.2f GB/s|%.2f GB/s iperf3|%.2fx|-\n",
        Median(gbps), iperf_gbps, Median(gbps) / iperf_gbps);
  } else {
    std::printf("row|bench_migration|migration over TCP, %s, best|%.2f GB/s|-|-|>= 0.8x iperf3\n",
                shape.c_str(), best);
  }
  std::printf(
      "row|bench_migration|MigrateSequence to first read on the target, p50|%.1f ms|-|-|-\n",
      Median(handoff_ms));
  std::printf("row|bench_migration|ResolveHandle p50|%.1f us|%.1f us empty RPC|%.2fx|<= 2x\n",
              Median(resolve_us), Median(ping_us), Median(resolve_us) / Median(ping_us));
  std::printf("row|bench_migration|CRC-32C of pages|%.2f GB/s|%.2f GB/s memcpy|%.2fx|-\n", crc,
              copy, crc / copy);
  return 0;
}

}  // namespace
}  // namespace kvwarden

int main(int argc, char** argv) {
  // This process forks etcd and the daemons while its own gRPC clients live.
  setenv("GRPC_ENABLE_FORK_SUPPORT", "false", 1);
  uint32_t layers = 32, tokens = 4096;
  int rounds = 3;
  bool iperf = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    bool ok = true;
    if (a.rfind("--layers=", 0) == 0) {
      ok = absl::SimpleAtoi(a.substr(9), &layers) && layers > 0;
    } else if (a.rfind("--tokens=", 0) == 0) {
      ok = absl::SimpleAtoi(a.substr(9), &tokens) && tokens > 0;
    } else if (a.rfind("--rounds=", 0) == 0) {
      ok = absl::SimpleAtoi(a.substr(9), &rounds) && rounds > 0;
    } else if (a == "--no-iperf") {
      iperf = false;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "usage: %s [--layers=32] [--tokens=4096] [--rounds=3] [--no-iperf]\n",
                   argv[0]);
      return 2;
    }
  }
  return kvwarden::Run(layers, tokens, rounds, iperf);
}
