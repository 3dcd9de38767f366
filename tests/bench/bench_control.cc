// bench_control: control-plane and gRPC byte-path costs, each next to a reference
// measured in the same run (this machine is shared and noisy; ratios travel, absolute
// numbers do not).
//   - page alloc+free in a PagePool (ns per page)
//   - ReserveSlots round trip p50 vs an empty unary RPC (Ping) on the same real daemon
//   - WriteKV + ReadKV MB/s for 1 MiB and 64 MiB vs a local memcpy of the same bytes
//   - the metrics' cost: ReserveSlots p50 on a daemon with --metrics vs one without,
//     interleaved in one run; the /metrics scrape's size and time with 10k sequences
// The daemon is the real kvwardend binary on loopback. A summary with the ratios is
// printed after the benchmark table.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "cache_service/core/memory/page_pool.h"
#include "kvwarden/client.h"
#include "grpcpp/grpcpp.h"
#include "kvwarden/v1/admin.grpc.pb.h"
#include "tests/support/process.h"

namespace kvwarden {
namespace {

// A 32-layer x 8-head x 128-dim fp16 model, 16 tokens/page (64 KiB pages).
constexpr const char* kBenchConfig = R"pb(
  admin_token: "bench-admin"
  pools {
    name: "main"
    layout { num_layers: 32 num_kv_heads: 8 head_dim: 128 dtype: DTYPE_FP16 page_tokens: 16 }
    capacity_bytes: 8589934592
    chunk_bytes: 67108864
  }
  tenants { name: "bench" token: "bench-token" quota_bytes: 8589934592 }
)pb";

std::map<std::string, double> g_results;  // name -> p50 us or MB/s, for the summary

// Scale: a small-page pool so that 10k sequences of 100 pages (1M pages) take 512 MiB of
// address space and no memory (nothing is written). Without metrics: the reference of
// their cost; kScaleConfig is the same daemon with them.
constexpr const char* kNoMetricsConfig = R"pb(
  admin_token: "bench-admin"
  pools {
    name: "scale"
    layout { num_layers: 1 num_kv_heads: 1 head_dim: 8 dtype: DTYPE_FP16 page_tokens: 16 }
    capacity_pages: 1200000
    chunk_bytes: 1048576
  }
  tenants { name: "bench" token: "bench-token" quota_pages: 1200000 limits { max_sequences: 20000 } }
  data_plane { disable_ucx: true }
)pb";
const std::string kScaleConfig = std::string(kNoMetricsConfig) + "metrics { listen: \"127.0.0.1:0\" }\n";

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * (v.size() - 1))];
}

struct Fixture {
  std::unique_ptr<testing::DaemonProcess> daemon;
  std::unique_ptr<Client> client;
  client::Lease lease;

  static Fixture& Get() {
    static Fixture* f = [] {
      auto* fx = new Fixture();
      auto d = testing::DaemonProcess::Start(kBenchConfig);
      if (!d.ok()) {
        std::fprintf(stderr, "bench_control: %s\n", d.status().ToString().c_str());
        std::exit(1);
      }
      fx->daemon = *std::move(d);
      fx->client = *Client::Connect({fx->daemon->target(), "bench-token", absl::Seconds(30)});
      fx->lease = *fx->client->RegisterWorker("bench", client::Role::kBoth, 300000);
      return fx;
    }();
    return *f;
  }
};

void BM_PageAllocFree(benchmark::State& state) {
  PagePoolOptions opts;
  opts.name = "bench";
  opts.layout = KvLayout{32, 8, 128, DType::kFp16, 16};
  opts.chunk_pages = 1024;
  opts.num_chunks = 4;
  auto pool = *PagePool::Create(std::move(opts));
  const uint32_t batch = static_cast<uint32_t>(state.range(0));
  std::vector<PageId> pages;
  pages.reserve(batch);
  for (auto _ : state) {
    pages.clear();
    if (!pool->Allocate(0, batch, &pages).ok()) state.SkipWithError("allocate failed");
    pool->Unref(pages);
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["ns_per_page"] = benchmark::Counter(
      static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_PageAllocFree)->Arg(1)->Arg(64);

void BM_PingRoundTrip(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  std::vector<double> us;
  for (auto _ : state) {
    const absl::Time t0 = absl::Now();
    if (!f.client->Ping().ok()) state.SkipWithError("ping failed");
    us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
  }
  state.counters["p50_us"] = g_results["ping_p50_us"] = Percentile(us, 0.5);
  state.counters["p99_us"] = Percentile(us, 0.99);
}
BENCHMARK(BM_PingRoundTrip)->MinTime(2.0)->UseRealTime();

void BM_ReserveSlotsRoundTrip(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  constexpr uint32_t kMaxTokens = 4096;
  auto seq = f.client->CreateSequence(f.lease.id, "main", kMaxTokens);
  uint32_t used = 0;
  std::vector<double> us, ping_us;
  for (auto _ : state) {
    if (used == kMaxTokens) {  // start a fresh sequence, off the clock
      state.PauseTiming();
      (void)f.client->ReleaseSequence(seq->id);
      seq = f.client->CreateSequence(f.lease.id, "main", kMaxTokens);
      used = 0;
      state.ResumeTiming();
    }
    // An empty RPC right before each reservation: the reference is timed in the same
    // moments as the figure, so the machine's drift (large on shared VMs) cancels.
    const absl::Time p0 = absl::Now();
    if (!f.client->Ping().ok()) state.SkipWithError("ping failed");
    const absl::Time t0 = absl::Now();
    if (!f.client->ReserveSlots(seq->id, 1).ok()) state.SkipWithError("reserve failed");
    us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
    ping_us.push_back(absl::ToDoubleMicroseconds(t0 - p0));
    ++used;
  }
  (void)f.client->ReleaseSequence(seq->id);
  state.counters["p50_us"] = g_results["reserve_p50_us"] = Percentile(us, 0.5);
  state.counters["p99_us"] = Percentile(us, 0.99);
  state.counters["ping_p50_us"] = g_results["interleaved_ping_p50_us"] = Percentile(ping_us, 0.5);
}
BENCHMARK(BM_ReserveSlotsRoundTrip)->MinTime(2.0)->UseRealTime();

// Writes then reads `bytes` of K+V (one layer range of one sequence) over gRPC.
void BM_WriteReadKV(benchmark::State& state) {
  Fixture& f = Fixture::Get();
  const size_t bytes = static_cast<size_t>(state.range(0));
  auto seq = f.client->CreateSequence(f.lease.id, "main", 32768);
  const client::Layout& l = seq->layout;
  const size_t per_token_all_layers = 2 * l.layer_bytes(1) * l.num_layers;  // K+V
  const uint32_t tokens = static_cast<uint32_t>(std::max<size_t>(1, bytes / per_token_all_layers));
  if (!f.client->ReserveSlots(seq->id, tokens).ok()) state.SkipWithError("reserve failed");
  std::string k(l.layer_bytes(tokens) * l.num_layers, 'k'), v(k.size(), 'v');
  double write_s = 0, read_s = 0;
  for (auto _ : state) {
    absl::Time t0 = absl::Now();
    if (!f.client->WriteKV(seq->id, l, 0, l.num_layers, 0, tokens,
                           {reinterpret_cast<const uint8_t*>(k.data()), k.size()},
                           {reinterpret_cast<const uint8_t*>(v.data()), v.size()}).ok()) {
      state.SkipWithError("write failed");
    }
    absl::Time t1 = absl::Now();
    auto r = f.client->ReadKV(seq->id, 0, l.num_layers, 0, tokens);
    if (!r.ok()) state.SkipWithError("read failed");
    write_s += absl::ToDoubleSeconds(t1 - t0);
    read_s += absl::ToDoubleSeconds(absl::Now() - t1);
  }
  (void)f.client->ReleaseSequence(seq->id);
  const double moved = static_cast<double>(k.size() + v.size()) * state.iterations();
  const std::string tag = bytes >= (64u << 20) ? "64MiB" : "1MiB";
  state.counters["write_MBps"] = g_results["write_MBps_" + tag] = moved / write_s / 1e6;
  state.counters["read_MBps"] = g_results["read_MBps_" + tag] = moved / read_s / 1e6;
  state.SetBytesProcessed(static_cast<int64_t>(moved * 2));
}
BENCHMARK(BM_WriteReadKV)->Arg(1 << 20)->Arg(64 << 20)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Memcpy(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  std::vector<char> src(bytes, 's'), dst(bytes, 'd');
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  const double mbps = static_cast<double>(bytes) * state.iterations() / 1e6;
  state.SetBytesProcessed(static_cast<int64_t>(bytes) * state.iterations());
  state.counters["MBps"] = benchmark::Counter(mbps, benchmark::Counter::kIsRate);
  g_results[bytes >= (64u << 20) ? "memcpy_64MiB" : "memcpy_1MiB"] = 0;  // filled below
}
BENCHMARK(BM_Memcpy)->Arg(1 << 20)->Arg(64 << 20)->UseRealTime();

// Captures memcpy MB/s from the reporter (its counter is a rate computed by the library).
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      const std::string name = r.benchmark_name();
      if (name == "BM_PageAllocFree/1" && r.counters.count("ns_per_page")) {
        g_results["alloc_free_ns"] = r.counters.at("ns_per_page").value * 1e9;  // an inverted rate: seconds
      }
      if (name.rfind("BM_Memcpy/", 0) == 0 && r.counters.count("MBps")) {
        g_results[name == "BM_Memcpy/1048576/real_time" ? "memcpy_1MiB" : "memcpy_64MiB"] =
            r.counters.at("MBps").value;
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

// ReserveSlots p50 (one token, a fresh sequence each 1000) with `live` sequences of 100
// pages each held, the time to list them all as the admin, and one /metrics scrape.
struct ScaleFigures {
  double reserve_p50_us = 0;
  double describe_p50_us = 0;
  double list_ms = 0;
  uint64_t listed = 0;
  double scrape_ms = 0;
  size_t scrape_bytes = 0;
};

std::string MetricsAddress(const std::string& target) {
  auto admin = v1::AdminService::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer bench-admin");
  v1::ListPoolsResponse resp;
  return admin->ListPools(&ctx, v1::ListPoolsRequest(), &resp).ok() ? resp.metrics_address() : "";
}

// GET /metrics from host:port; the body's size (0 on failure).
size_t ScrapeBytes(const std::string& address) {
  const size_t colon = address.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  if (inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr) != 1) return 0;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  size_t total = 0;
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0) {
    const std::string req = "GET /metrics HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      std::string body;
      char buf[65536];
      for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) body.append(buf, n);
      const size_t end = body.find("\r\n\r\n");
      total = end == std::string::npos ? 0 : body.size() - end - 4;
    }
  }
  close(fd);
  return total;
}

// ReserveSlots p50 over `n` one-token calls (a fresh sequence each 1000).
double ReserveP50(Client& c, uint64_t lease, int n) {
  std::vector<double> us;
  auto seq = c.CreateSequence(lease, "scale", 1000);
  for (int i = 0; i < n && seq.ok(); ++i) {
    if (i > 0 && i % 1000 == 0) {
      (void)c.ReleaseSequence(seq->id);
      seq = c.CreateSequence(lease, "scale", 1000);
    }
    const absl::Time t0 = absl::Now();
    if (!c.ReserveSlots(seq->id, 1).ok()) break;
    us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
  }
  if (seq.ok()) (void)c.ReleaseSequence(seq->id);
  return Percentile(us, 0.5);
}

// ReserveSlots p50 with metrics on and off: two daemons, measured in alternating blocks
// so the machine's drift falls on both; the median block of each.
struct MetricsCost {
  double on_us = 0, off_us = 0;
};
MetricsCost MeasureMetricsCost(int rounds, int calls) {
  MetricsCost out;
  auto on = testing::DaemonProcess::Start(kScaleConfig);
  auto off = testing::DaemonProcess::Start(kNoMetricsConfig);
  if (!on.ok() || !off.ok()) return out;
  auto con = *Client::Connect({(*on)->target(), "bench-token", absl::Seconds(30)});
  auto coff = *Client::Connect({(*off)->target(), "bench-token", absl::Seconds(30)});
  auto lon = *con->RegisterWorker("metrics-on", client::Role::kBoth, 300000);
  auto loff = *coff->RegisterWorker("metrics-off", client::Role::kBoth, 300000);
  std::vector<double> on_p50, off_p50;
  for (int r = 0; r < rounds; ++r) {
    off_p50.push_back(ReserveP50(*coff, loff.id, calls));
    on_p50.push_back(ReserveP50(*con, lon.id, calls));
  }
  out.on_us = Percentile(on_p50, 0.5);
  out.off_us = Percentile(off_p50, 0.5);
  return out;
}

// DescribeSequence p50 over `n` calls on one sequence.
double DescribeP50(Client& c, uint64_t sequence, int n) {
  std::vector<double> us;
  for (int i = 0; i < n; ++i) {
    const absl::Time t0 = absl::Now();
    if (!c.DescribeSequence(sequence).ok()) break;
    us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
  }
  return Percentile(us, 0.5);
}

// A daemon holding `live` sequences of 1600 reserved tokens (100 pages) each.
struct ScaleDaemon {
  std::unique_ptr<testing::DaemonProcess> daemon;
  std::unique_ptr<Client> client;
  uint64_t lease = 0, probe = 0;

  absl::Status Start(uint32_t live) {
    auto d = testing::DaemonProcess::Start(kScaleConfig);
    if (!d.ok()) return d.status();
    daemon = *std::move(d);
    auto c = Client::Connect({daemon->target(), "bench-token", absl::Seconds(60)});
    if (!c.ok()) return c.status();
    client = *std::move(c);
    auto l = client->RegisterWorker("scale", client::Role::kBoth, 300000);
    if (!l.ok()) return l.status();
    lease = l->id;
    for (uint32_t i = 0; i < live; ++i) {
      auto seq = client->CreateSequence(lease, "scale", 1600);
      if (!seq.ok()) return seq.status();
      if (auto r = client->ReserveSlots(seq->id, 1600); !r.ok()) return r.status();
    }
    auto p = client->CreateSequence(lease, "scale", 1000);
    if (!p.ok()) return p.status();
    probe = p->id;
    return client->ReserveSlots(probe, 16).status();
  }
};

// The 10k-sequence daemon against a 10-sequence one, both alive, measured in alternating
// blocks (median block p50 of each) so the machine's drift falls on both; then the large
// one's admin listing and /metrics scrape.
struct ScaleComparison {
  ScaleFigures small, large;
};
ScaleComparison MeasureAtScale(uint32_t few, uint32_t live, int rounds, int calls) {
  ScaleComparison out;
  ScaleDaemon small, large;
  for (auto [d, n] : {std::pair{&small, few}, std::pair{&large, live}}) {
    if (absl::Status s = d->Start(n); !s.ok()) {
      std::fprintf(stderr, "bench_control scale (%u sequences): %s\n", n, s.ToString().c_str());
      return out;
    }
  }
  std::vector<double> reserve[2], describe[2];
  for (int r = 0; r < rounds; ++r) {
    for (int i = 0; i < 2; ++i) {
      ScaleDaemon& d = i == 0 ? small : large;
      reserve[i].push_back(ReserveP50(*d.client, d.lease, calls));
      describe[i].push_back(DescribeP50(*d.client, d.probe, calls));
    }
  }
  out.small.reserve_p50_us = Percentile(reserve[0], 0.5);
  out.large.reserve_p50_us = Percentile(reserve[1], 0.5);
  out.small.describe_p50_us = Percentile(describe[0], 0.5);
  out.large.describe_p50_us = Percentile(describe[1], 0.5);
  auto channel = grpc::CreateChannel(large.daemon->target(), grpc::InsecureChannelCredentials());
  auto admin = v1::AdminService::NewStub(channel);
  const absl::Time t0 = absl::Now();
  v1::ListSequencesRequest req;
  do {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer bench-admin");
    v1::ListSequencesResponse resp;
    if (!admin->ListSequences(&ctx, req, &resp).ok()) break;
    out.large.listed += resp.sequences_size();
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  out.large.list_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
  const std::string metrics = MetricsAddress(large.daemon->target());
  const absl::Time s0 = absl::Now();
  out.large.scrape_bytes = metrics.empty() ? 0 : ScrapeBytes(metrics);
  out.large.scrape_ms = absl::ToDoubleMilliseconds(absl::Now() - s0);
  return out;
}

}  // namespace
}  // namespace kvwarden

int main(int argc, char** argv) {
  // --scale_sequences=N (default 10000; 0 skips): ours, taken out before the library's.
  uint32_t scale = 10000;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--scale_sequences=", 18) == 0) {
      scale = static_cast<uint32_t>(std::strtoul(argv[i] + 18, nullptr, 10));
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      --i;
    }
  }
  using kvwarden::g_results;
  // As kvwardend runs its locks (daemon_main.cc): without Abseil's deadlock detector.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  benchmark::Initialize(&argc, argv);
  kvwarden::SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  auto get = [](const char* k) { return g_results.count(k) ? g_results[k] : 0.0; };
  std::printf("\n== bench_control summary (same run, same daemon)\n");
  // row|bench|figure|value|reference|ratio|goal: one line per figure, for scripts/bench.sh.
  if (get("alloc_free_ns") > 0) {
    std::printf("row|bench_control|page alloc+free, one page|%.0f ns|-|-|<= 100 ns\n", get("alloc_free_ns"));
  }
  if (get("interleaved_ping_p50_us") > 0 && get("reserve_p50_us") > 0) {
    const double reserve = get("reserve_p50_us"), ping = get("interleaved_ping_p50_us");
    std::printf("ReserveSlots p50 %.1f us vs empty RPC p50 %.1f us (interleaved): ratio %.2fx (goal <= 1.3x)\n",
                reserve, ping, reserve / ping);
    std::printf("row|bench_control|ReserveSlots p50|%.1f us|%.1f us empty RPC|%.2fx|<= 1.3x\n", reserve, ping,
                reserve / ping);
  }
  for (const char* tag : {"1MiB", "64MiB"}) {
    const double mc = get((std::string("memcpy_") + tag).c_str());
    const double w = get((std::string("write_MBps_") + tag).c_str());
    const double r = get((std::string("read_MBps_") + tag).c_str());
    if (mc > 0 && w > 0) {
      std::printf("%-5s WriteKV %.0f MB/s (%.3fx memcpy), ReadKV %.0f MB/s (%.3fx memcpy), memcpy %.0f MB/s\n",
                  tag, w, w / mc, r, r / mc, mc);
      std::printf("row|bench_control|WriteKV %s (gRPC)|%.0f MB/s|%.0f MB/s memcpy|%.3fx|-\n", tag, w, mc, w / mc);
      std::printf("row|bench_control|ReadKV %s (gRPC)|%.0f MB/s|%.0f MB/s memcpy|%.3fx|-\n", tag, r, mc, r / mc);
    }
  }
  const kvwarden::MetricsCost cost = kvwarden::MeasureMetricsCost(scale > 0 ? 5 : 1, scale > 0 ? 2000 : 100);
  if (cost.on_us > 0 && cost.off_us > 0) {
    std::printf("ReserveSlots p50 with metrics %.1f us vs without %.1f us: %.3fx (goal <= 1.05x)\n", cost.on_us,
                cost.off_us, cost.on_us / cost.off_us);
    std::printf("row|bench_control|ReserveSlots p50, metrics on|%.1f us|%.1f us metrics off|%.3fx|<= 1.05x\n",
                cost.on_us, cost.off_us, cost.on_us / cost.off_us);
  }
  if (scale > 0) {
    const uint32_t few = std::min<uint32_t>(10, scale);
    const kvwarden::ScaleComparison both = kvwarden::MeasureAtScale(few, scale, 11, 200);
    const kvwarden::ScaleFigures& small = both.small;
    const kvwarden::ScaleFigures& large = both.large;
    if (small.reserve_p50_us > 0 && large.reserve_p50_us > 0) {
      std::printf("ReserveSlots p50 with %u live sequences (%u pages) %.1f us vs %.1f us with %u: %.2fx "
                  "(goal <= 1.2x); listing %llu sequences took %.1f ms (goal < 100 ms at 10k)\n",
                  scale, scale * 100, large.reserve_p50_us, small.reserve_p50_us, few,
                  large.reserve_p50_us / small.reserve_p50_us, static_cast<unsigned long long>(large.listed),
                  large.list_ms);
      std::printf("row|bench_control|ReserveSlots p50, %u sequences / %u pages|%.1f us|%.1f us at %u sequences|"
                  "%.2fx|<= 1.2x\n",
                  scale, scale * 100, large.reserve_p50_us, small.reserve_p50_us, few,
                  large.reserve_p50_us / small.reserve_p50_us);
      if (small.describe_p50_us > 0 && large.describe_p50_us > 0) {
        std::printf("row|bench_control|DescribeSequence p50, %u sequences / %u pages|%.1f us|%.1f us at %u "
                    "sequences|%.2fx|<= 1.2x\n",
                    scale, scale * 100, large.describe_p50_us, small.describe_p50_us, few,
                    large.describe_p50_us / small.describe_p50_us);
      }
      std::printf("row|bench_control|admin listing of %llu sequences|%.1f ms|-|-|< 100 ms at 10k\n",
                  static_cast<unsigned long long>(large.listed), large.list_ms);
      std::printf("row|bench_control|/metrics scrape with %u sequences|%.1f ms, %zu bytes|-|-|-\n", scale,
                  large.scrape_ms, large.scrape_bytes);
    }
  }
  return 0;
}
