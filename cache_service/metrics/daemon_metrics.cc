#include "cache_service/metrics/daemon_metrics.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "cache_service/retention/registry.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/support/status_code_enum.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace kvwarden {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Histogram;

constexpr int kNumCodes = 17;  // grpc::StatusCode 0..16
constexpr const char* kCodeNames[kNumCodes] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

// The services whose methods get their own label value.
constexpr const char* kServices[] = {"kvwarden.v1.ControlService", "kvwarden.v1.TransferService",
                                     "kvwarden.v1.AdminService", "grpc.health.v1.Health"};

const char* CauseName(RetentionCause c) {
  switch (c) {
    case RetentionCause::kStats:
      return "stats";
    case RetentionCause::kReserve:
      return "reserve";
    case RetentionCause::kPressure:
      return "pressure";
  }
  return "?";
}

// Seconds: 50 us to 10 s for RPCs, 10 us to 1 s for compaction, 0.1 s to 2 h for lifetimes.
const Histogram::BucketBoundaries& RpcBuckets() {
  static const Histogram::BucketBoundaries b{5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
                                             5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,  0.25,
                                             0.5,  1,    2.5,    5,    10};
  return b;
}
const Histogram::BucketBoundaries& CompactionBuckets() {
  static const Histogram::BucketBoundaries b{1e-5, 2.5e-5, 5e-5,   1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
                                             5e-3, 1e-2,   2.5e-2, 5e-2, 0.1,    0.25, 1};
  return b;
}
const Histogram::BucketBoundaries& LifetimeBuckets() {
  static const Histogram::BucketBoundaries b{0.1, 0.25, 0.5, 1,   2.5,  5,    10,  30,
                                             60,  120,  300, 600, 1800, 3600, 7200};
  return b;
}

}  // namespace

struct DaemonMetrics::Families {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();

  Family<Histogram>& rpc =
      prometheus::BuildHistogram()
          .Name("kvwarden_rpc_duration_seconds")
          .Help(
              "gRPC calls by method and status code: time from the call's start to its "
              "status (streams: the whole stream)")
          .Register(*registry);
  // Method name -> index; the last index is "other". Fixed after construction.
  absl::flat_hash_map<std::string, size_t> method_index;
  std::vector<std::string> method_names;
  // [method][code], made on first use (Family::Add is thread-safe and idempotent).
  std::vector<std::array<std::atomic<Histogram*>, kNumCodes>> rpc_series;

  Family<Counter>& compressions =
      prometheus::BuildCounter()
          .Name("kvwarden_retention_compressions_total")
          .Help(
              "Compressions that evicted tokens, by policy and cause (stats, "
              "reserve, pressure)")
          .Register(*registry);
  Family<Counter>& evicted =
      prometheus::BuildCounter()
          .Name("kvwarden_retention_evicted_tokens_total")
          .Help("Tokens evicted, counted per (layer, KV head), by policy and cause")
          .Register(*registry);
  Family<Histogram>& compaction =
      prometheus::BuildHistogram()
          .Name("kvwarden_retention_compaction_seconds")
          .Help("Time of one compression (selection and page compaction), by policy")
          .Register(*registry);
  Family<Histogram>& token_lifetime =
      prometheus::BuildHistogram()
          .Name("kvwarden_token_lifetime_seconds")
          .Help(
              "Evicted tokens' time in the cache, reservation to eviction, per "
              "(layer, KV head), by policy")
          .Register(*registry);
  Family<Histogram>& seq_lifetime =
      prometheus::BuildHistogram()
          .Name("kvwarden_sequence_lifetime_seconds")
          .Help(
              "Sequences' time from creation to release, by policy and how they "
              "ended (released, lease_ended, migrated)")
          .Register(*registry);
  Family<Histogram>& seq_idle =
      prometheus::BuildHistogram()
          .Name("kvwarden_sequence_idle_seconds")
          .Help(
              "Time since a sequence's last reservation, write, read or statistics "
              "when it went, by policy and how it ended")
          .Register(*registry);
  Family<Counter>& stats_messages = prometheus::BuildCounter()
                                        .Name("kvwarden_stats_messages_total")
                                        .Help("StreamStats messages applied")
                                        .Register(*registry);
  Family<Counter>& stats_ids =
      prometheus::BuildCounter()
          .Name("kvwarden_stats_ids_total")
          .Help("Slot ids (sparse), attention values (dense) and window sums applied")
          .Register(*registry);
  Family<Counter>& pressure = prometheus::BuildCounter()
                                  .Name("kvwarden_pressure_tightenings_total")
                                  .Help("Sequences whose budget memory pressure tightened, by pool")
                                  .Register(*registry);
  Family<Counter>& migrations =
      prometheus::BuildCounter()
          .Name("kvwarden_migrations_total")
          .Help(
              "Sequence migrations that ended here, by direction (out: this node "
              "was the source, in: the target) and status code")
          .Register(*registry);
  Family<Counter>& migration_bytes =
      prometheus::BuildCounter()
          .Name("kvwarden_migration_bytes_total")
          .Help("Page bytes of sequences migrated successfully, by direction")
          .Register(*registry);
  Family<Counter>& transfers_begun = prometheus::BuildCounter()
                                         .Name("kvwarden_transfers_begun_total")
                                         .Help("Transfer leases granted, by mode (read, write)")
                                         .Register(*registry);
  Family<Counter>& transfer_bytes =
      prometheus::BuildCounter()
          .Name("kvwarden_transfer_pinned_bytes_total")
          .Help(
              "Page bytes pinned by granted transfer leases (what UCX or attach "
              "may then move), by mode")
          .Register(*registry);
  Family<Counter>& transfers_ended =
      prometheus::BuildCounter()
          .Name("kvwarden_transfers_ended_total")
          .Help("Transfer leases ended, by how (completed, expired, lease_ended)")
          .Register(*registry);
  Family<Counter>& kv_bytes =
      prometheus::BuildCounter()
          .Name("kvwarden_kv_bytes_total")
          .Help("K/V bytes moved through the daemon, by transport and direction")
          .Register(*registry);
  Family<Counter>& lapses = prometheus::BuildCounter()
                                .Name("kvwarden_lease_lapses_total")
                                .Help("Worker leases that lapsed (no keep-alive within the TTL)")
                                .Register(*registry);

  // Series made up front: the hot paths then only touch their atomics.
  struct PerPolicy {
    std::array<Counter*, 3> compressions{}, evicted{};
    Histogram* compaction = nullptr;
    Histogram* token_lifetime = nullptr;
    std::array<Histogram*, 3> seq_lifetime{}, seq_idle{};
  };
  absl::flat_hash_map<const RetentionStrategy*, PerPolicy> policy;
  Counter* stats_messages_total = &stats_messages.Add({});
  Counter* stats_ids_total = &stats_ids.Add({});
  std::array<Counter*, 2> begun{&transfers_begun.Add({{"mode", "read"}}),
                                &transfers_begun.Add({{"mode", "write"}})};
  std::array<Counter*, 2> pinned{&transfer_bytes.Add({{"mode", "read"}}),
                                 &transfer_bytes.Add({{"mode", "write"}})};
  std::array<Counter*, 3> ended{&transfers_ended.Add({{"how", "completed"}}),
                                &transfers_ended.Add({{"how", "expired"}}),
                                &transfers_ended.Add({{"how", "lease_ended"}})};
  std::array<Counter*, 2> kv{&kv_bytes.Add({{"transport", "grpc"}, {"direction", "read"}}),
                             &kv_bytes.Add({{"transport", "grpc"}, {"direction", "write"}})};
  Counter* lapses_total = &lapses.Add({});

  Families() {
    for (const char* name : kServices) {
      const google::protobuf::ServiceDescriptor* s =
          google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
      for (int i = 0; s != nullptr && i < s->method_count(); ++i) {
        std::string full = "/" + s->full_name() + "/" + s->method(i)->name();
        method_index.emplace(full, method_names.size());
        method_names.push_back(std::move(full));
      }
    }
    method_names.push_back("other");
    rpc_series = std::vector<std::array<std::atomic<Histogram*>, kNumCodes>>(method_names.size());
    for (auto& row : rpc_series) {
      for (auto& cell : row) cell.store(nullptr, std::memory_order_relaxed);
    }
    for (const RetentionStrategy* strategy : RetentionPolicies()) {
      const std::string p = strategy->name();
      PerPolicy& pp = policy[strategy];
      // Only the causes a policy can have (full never evicts): every series that can
      // move exists from the start, so rate() sees its zero.
      bool evicts = false;
      for (RetentionCause c :
           {RetentionCause::kStats, RetentionCause::kReserve, RetentionCause::kPressure}) {
        if (!strategy->Evicts(c)) continue;
        evicts = true;
        pp.compressions[static_cast<int>(c)] =
            &compressions.Add({{"policy", p}, {"cause", CauseName(c)}});
        pp.evicted[static_cast<int>(c)] = &evicted.Add({{"policy", p}, {"cause", CauseName(c)}});
      }
      if (evicts) {
        pp.compaction = &compaction.Add({{"policy", p}}, CompactionBuckets());
        pp.token_lifetime = &token_lifetime.Add({{"policy", p}}, LifetimeBuckets());
      }
      pp.seq_lifetime = {
          &seq_lifetime.Add({{"policy", p}, {"end", "released"}}, LifetimeBuckets()),
          &seq_lifetime.Add({{"policy", p}, {"end", "lease_ended"}}, LifetimeBuckets()),
          &seq_lifetime.Add({{"policy", p}, {"end", "migrated"}}, LifetimeBuckets())};
      pp.seq_idle = {&seq_idle.Add({{"policy", p}, {"end", "released"}}, LifetimeBuckets()),
                     &seq_idle.Add({{"policy", p}, {"end", "lease_ended"}}, LifetimeBuckets()),
                     &seq_idle.Add({{"policy", p}, {"end", "migrated"}}, LifetimeBuckets())};
    }
  }
};

DaemonMetrics::DaemonMetrics(const std::vector<std::string>& pools)
    : f_(std::make_unique<Families>()) {
  for (const std::string& pool : pools) f_->pressure.Add({{"pool", pool}});
  for (const char* direction : {"out", "in"}) {
    f_->migrations.Add({{"direction", direction}, {"code", "OK"}});
    f_->migration_bytes.Add({{"direction", direction}});
  }
}
DaemonMetrics::~DaemonMetrics() = default;

std::shared_ptr<prometheus::Registry> DaemonMetrics::registry() const { return f_->registry; }

void DaemonMetrics::ObserveRpc(const std::string& method, int code, double seconds) {
  auto it = f_->method_index.find(method);
  const size_t m = it == f_->method_index.end() ? f_->method_names.size() - 1 : it->second;
  const int c = code >= 0 && code < kNumCodes ? code : static_cast<int>(grpc::StatusCode::UNKNOWN);
  std::atomic<Histogram*>& cell = f_->rpc_series[m][c];
  Histogram* h = cell.load(std::memory_order_acquire);
  if (h == nullptr) {
    h = &f_->rpc.Add({{"method", f_->method_names[m]}, {"code", kCodeNames[c]}}, RpcBuckets());
    cell.store(h, std::memory_order_release);
  }
  h->Observe(seconds);
}

void DaemonMetrics::Compressed(const RetentionStrategy& policy, RetentionCause cause,
                               absl::Span<const HeadRetention> changes,
                               absl::Span<const int64_t> reserved_at_ms, int64_t now_ms,
                               absl::Duration took) {
  auto it = f_->policy.find(&policy);
  if (it == f_->policy.end()) return;  // not a registered policy
  Families::PerPolicy& p = it->second;
  Counter* compressions = p.compressions[static_cast<int>(cause)];
  if (compressions == nullptr || p.compaction == nullptr) return;  // a pair no policy reports
  // Bucketed here, then added at once: one histogram update per compression, not per token.
  const Histogram::BucketBoundaries& bounds = LifetimeBuckets();
  std::vector<double> counts(bounds.size() + 1);  // the last: +Inf
  double sum = 0;
  uint64_t tokens = 0;
  for (const HeadRetention& c : changes) {
    for (uint32_t pos : c.evicted_positions) {
      const double age = pos < reserved_at_ms.size()
                             ? std::max<int64_t>(0, now_ms - reserved_at_ms[pos]) / 1e3
                             : 0;
      ++counts[std::lower_bound(bounds.begin(), bounds.end(), age) - bounds.begin()];
      sum += age;
      ++tokens;
    }
  }
  compressions->Increment();
  p.evicted[static_cast<int>(cause)]->Increment(static_cast<double>(tokens));
  p.compaction->Observe(absl::ToDoubleSeconds(took));
  if (tokens > 0) p.token_lifetime->ObserveMultiple(counts, sum);
}

void DaemonMetrics::StatsApplied(uint64_t ids) {
  f_->stats_messages_total->Increment();
  f_->stats_ids_total->Increment(static_cast<double>(ids));
}

void DaemonMetrics::PressureTightened(const std::string& pool) {
  // Pools are fixed by the config: a bounded label.
  f_->pressure.Add({{"pool", pool}}).Increment();
}

void DaemonMetrics::SequenceEnded(const RetentionStrategy& policy, SequenceEnd why,
                                  absl::Duration lifetime, absl::Duration idle) {
  auto it = f_->policy.find(&policy);
  if (it == f_->policy.end()) return;
  Families::PerPolicy& p = it->second;
  const int e = static_cast<int>(why);  // the order of the series above
  p.seq_lifetime[e]->Observe(absl::ToDoubleSeconds(lifetime));
  p.seq_idle[e]->Observe(absl::ToDoubleSeconds(idle));
}

void DaemonMetrics::MigrationEnded(bool out, absl::StatusCode code, uint64_t bytes) {
  const std::string direction = out ? "out" : "in";
  // 17 codes at most: a bounded label, named as the RPC durations name theirs.
  f_->migrations.Add({{"direction", direction}, {"code", absl::StatusCodeToString(code)}})
      .Increment();
  if (code == absl::StatusCode::kOk)
    f_->migration_bytes.Add({{"direction", direction}}).Increment(static_cast<double>(bytes));
}

void DaemonMetrics::TransferBegun(bool write, uint64_t bytes) {
  f_->begun[write]->Increment();
  f_->pinned[write]->Increment(static_cast<double>(bytes));
}

void DaemonMetrics::TransferEnded(TransferEnd how) {
  f_->ended[static_cast<int>(how)]->Increment();
}

void DaemonMetrics::KvBytes(bool write, uint64_t bytes) {
  f_->kv[write]->Increment(static_cast<double>(bytes));
}

void DaemonMetrics::LeaseLapsed() { f_->lapses_total->Increment(); }

}  // namespace kvwarden
