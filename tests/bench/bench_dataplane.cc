// bench_dataplane: the data plane between two processes (this one and a real kvwardend
// it starts on loopback), with references measured in the same run.
//   put/get bandwidth of a sequence's pages at each --sizes (bytes per operation): one
//     transfer lease over the whole sequence, operations back to back (each waits for
//     local completion), remote completion (flush) at the end, as ucx_perftest's
//     ucp_put_bw does; "hot" (the same pages each time, as ucx_perftest) and "stream"
//     (walking 64 MiB). MiB/s like ucx_perftest's "MB/s".
//   one-page get latency p50 (RMA only, lease held: the same page, and walking the
//   sequence) and with its own lease (Get).
//   attached read: every page of the sequence copied out of the mapped chunks vs a
//     memcpy of the same bytes from local memory (goal >= 0.95).
// Prints "key=value" lines (tests/bench/dataplane_vs_ucx_perftest.sh reads them).
//
// Usage: bench_dataplane [--transports=shm] [--sizes=65536,1048576] [--seconds=2] [--memfd]

#include <cstdlib>
#include <memory>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "kvwarden/client.h"
#include "kvwarden/data_plane.h"
#include "tests/support/process.h"

namespace kvwarden {
namespace {

// One layer x 8 heads x 128 dim fp16, 16 tokens/page: 64 KiB pages, 64 MiB chunks.
constexpr const char* kBenchConfig = R"pb(
  admin_token: "bench-admin"
  pools {
    name: "main"
    layout { num_layers: 1 num_kv_heads: 8 head_dim: 128 dtype: DTYPE_FP16 page_tokens: 16 }
    capacity_bytes: 1073741824
    chunk_bytes: 67108864
  }
  tenants { name: "bench" token: "bench-token" quota_bytes: 1073741824 }
)pb";
constexpr uint32_t kPages = 1024;  // a 64 MiB sequence: one chunk, so runs are contiguous

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[static_cast<size_t>(p * (v.size() - 1))];
}

double MiBps(size_t bytes, absl::Duration d) {
  return static_cast<double>(bytes) / (1 << 20) / absl::ToDoubleSeconds(d);
}

// A page-aligned byte buffer.
class AlignedBytes {
 public:
  explicit AlignedBytes(size_t n)
      : n_(n), p_(static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096)), &std::free) {}
  uint8_t* data() { return p_.get(); }
  size_t size() const { return n_; }
  uint8_t& operator[](size_t i) { return p_.get()[i]; }

 private:
  size_t n_;
  std::unique_ptr<uint8_t, decltype(&std::free)> p_;
};

int Run(const std::string& transports, const std::vector<size_t>& sizes, double seconds,
        bool memfd) {
  setenv("UCX_NET_DEVICES", "lo", 0);
  auto daemon = testing::DaemonProcess::Start(
      std::string(kBenchConfig) + (memfd ? "data_plane { memfd_chunks: true }\n" : ""),
      {"--attach-socket=" + std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
       "/kvw-bench-" + std::to_string(getpid()) + ".sock"});
  if (!daemon.ok()) {
    std::fprintf(stderr, "bench_dataplane: %s\n", daemon.status().ToString().c_str());
    return 1;
  }
  auto c = *Client::Connect({(*daemon)->target(), "bench-token", absl::Seconds(30)});
  auto lease = c->RegisterWorker("bench", client::Role::kBoth, 300000);
  const uint32_t pt = 16;
  auto seq = c->CreateSequence(lease->id, "main", kPages * pt);
  if (!seq.ok() || !c->ReserveSlots(seq->id, kPages * pt).ok()) return 1;
  client::DataPlaneOptions opts;
  opts.transports = transports;
  auto dp = client::DataPlane::Connect(c.get(), lease->id, opts);
  if (!dp.ok()) {
    std::fprintf(stderr, "bench_dataplane: %s\n", dp.status().ToString().c_str());
    return 1;
  }
  const size_t page = (*dp)->page_bytes();
  const client::PageRange all{seq->id, 0, 1, 0, kPages * pt};
  // Page-aligned, as ucx_perftest's buffers are: a get is a memcpy into it, and glibc's
  // copy runs ~1.5x faster into a 64-byte-aligned destination than into malloc's
  // 16-byte-offset large blocks (66 vs 97 GB/s for hot 64 KiB gets here).
  AlignedBytes buf(size_t{kPages} * page);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 131);
  if (std::getenv("KVW_BENCH_VERBOSE"))
    std::fprintf(stderr, "%s", (*dp)->DescribeEndpoint().c_str());
  // Which lanes and protocols UCX chose for this endpoint, per size range, so a silent
  // fallback (e.g. get over tcp, or bcopy where zero-copy was expected) shows in the output.
  for (absl::string_view line : absl::StrSplit((*dp)->DescribeEndpoint(), '\n')) {
    line = absl::StripLeadingAsciiWhitespace(absl::StripPrefix(line, "#"));
    if (absl::StartsWith(line, "lane[") || absl::StartsWith(line, "put[") || absl::StartsWith(line, "get[") ||
        absl::StartsWith(line, "rma_bw")) {
      std::printf("ucx_proto transports=%s %s\n", transports.c_str(), std::string(line).c_str());
    }
  }
  std::printf("transports=%s page_bytes=%zu sequence_bytes=%zu\n", transports.c_str(), page,
              buf.size());

  // Two access patterns per size: "hot" moves the same pages every operation (what
  // ucx_perftest does: its buffers stay in cache), "stream" walks the whole 64 MiB
  // sequence (DRAM-bound, what a real prefill-to-decode hand-off does).
  for (size_t size : sizes) {
    const uint32_t per_op = static_cast<uint32_t>(std::max<size_t>(1, size / page));
    for (const bool hot : {true, false}) {
      for (const bool put : {true, false}) {
        auto t =
            (*dp)->Begin(all, put ? client::TransferMode::kWrite : client::TransferMode::kRead);
        if (!t.ok()) return 1;
        auto op = [&](uint32_t p) {
          return put ? (*t)->WritePages(0, p, per_op, buf.data() + size_t{p} * page)
                     : (*t)->ReadPages(0, p, per_op, buf.data() + size_t{p} * page);
        };
        // Warm up (endpoint lanes, mappings of the remote chunk), then time.
        for (uint32_t p = 0; p + per_op <= kPages; p += per_op) {
          if (absl::Status s = op(p); !s.ok()) {
            std::fprintf(stderr, "bench_dataplane: %s\n", s.ToString().c_str());
            return 1;
          }
        }
        size_t bytes = 0, ops = 0;
        const absl::Time start = absl::Now();
        while (absl::Now() - start < absl::Seconds(seconds)) {
          for (uint32_t p = 0; p + per_op <= kPages; p += per_op, ++ops) {
            (void)op(hot ? 0 : p);
            bytes += size_t{per_op} * page;
          }
        }
        if (put) (void)(*t)->Flush();
        const absl::Duration took = absl::Now() - start;
        (void)(*t)->End();
        std::printf("%s_bw_MiBps size=%zu pattern=%s value=%.1f ops=%zu\n", put ? "put" : "get",
                    size_t{per_op} * page, hot ? "hot" : "stream", MiBps(bytes, took), ops);
      }
    }
  }

  // One page: RMA alone under a held lease — "hot" reads the same page every time (what
  // ucx_perftest's put_lat does: its buffer stays in cache, the like-for-like figure),
  // "stream" walks the sequence (a DRAM-bound copy of 64 KiB) — and a whole Get with its
  // own lease.
  {
    auto t = (*dp)->Begin(all, client::TransferMode::kRead);
    std::vector<double> rma, rma_stream, leased;
    for (int i = 0; i < 2000; ++i) {
      const absl::Time s = absl::Now();
      (void)(*t)->ReadPages(0, 0, 1, buf.data());
      rma.push_back(absl::ToDoubleMicroseconds(absl::Now() - s));
    }
    for (int i = 0; i < 2000; ++i) {
      const absl::Time s = absl::Now();
      (void)(*t)->ReadPages(0, i % kPages, 1, buf.data() + size_t{i % kPages} * page);
      rma_stream.push_back(absl::ToDoubleMicroseconds(absl::Now() - s));
    }
    (void)(*t)->End();
    const client::PageRange one{seq->id, 0, 1, 0, pt};
    for (int i = 0; i < 300; ++i) {
      const absl::Time s = absl::Now();
      (void)(*dp)->Get(one, absl::MakeSpan(buf.data(), page));
      leased.push_back(absl::ToDoubleMicroseconds(absl::Now() - s));
    }
    std::printf("get_1page_p50_us size=%zu rma=%.2f rma_stream=%.2f with_lease=%.1f\n", page, Percentile(rma, 0.5),
                Percentile(rma_stream, 0.5), Percentile(leased, 0.5));
  }

  // Attached read vs local memcpy of the same bytes, best of several rounds each.
  {
    auto pool = client::AttachedPool::Attach(c.get(), lease->id, {"main"});
    if (!pool.ok()) {
      std::fprintf(stderr, "bench_dataplane: attach: %s\n", pool.status().ToString().c_str());
      return 1;
    }
    auto m = (*pool)->Map(all);
    if (!m.ok()) return 1;
    std::vector<uint8_t> local(buf.size(), 1), dst(buf.size());
    double best_attached = 0, best_memcpy = 0;
    for (int round = 0; round < 15; ++round) {
      absl::Time s = absl::Now();
      for (uint32_t p = 0; p < kPages; ++p)
        std::memcpy(dst.data() + size_t{p} * page, (*m)->page(0, p), page);
      best_attached = std::max(best_attached, MiBps(dst.size(), absl::Now() - s));
      s = absl::Now();
      std::memcpy(dst.data(), local.data(), local.size());
      best_memcpy = std::max(best_memcpy, MiBps(dst.size(), absl::Now() - s));
    }
    std::printf("attached_read_MiBps size=%zu value=%.1f memcpy=%.1f ratio=%.3f\n", dst.size(),
                best_attached, best_memcpy, best_attached / best_memcpy);
  }
  (void)c->ReleaseSequence(seq->id);
  return 0;
}

}  // namespace
}  // namespace kvwarden

int main(int argc, char** argv) {
  std::string transports = "shm";
  std::vector<size_t> sizes = {65536, 1048576};
  double seconds = 2;
  bool memfd = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--transports=", 0) == 0) {
      transports = a.substr(13);
    } else if (a.rfind("--sizes=", 0) == 0) {
      sizes.clear();
      for (absl::string_view s : absl::StrSplit(a.substr(8), ',')) {
        size_t v = 0;
        if (!absl::SimpleAtoi(s, &v)) return 2;
        sizes.push_back(v);
      }
    } else if (a == "--memfd") {
      memfd = true;  // chunks in memfd: UCX emulates RMA through the daemon's worker
    } else if (a.rfind("--seconds=", 0) == 0) {
      seconds = std::stod(a.substr(10));
    } else {
      std::fprintf(stderr, "usage: %s [--transports=shm] [--sizes=65536,1048576] [--seconds=2] [--memfd]\n",
                   argv[0]);
      return 2;
    }
  }
  return kvwarden::Run(transports, sizes, seconds, memfd);
}
