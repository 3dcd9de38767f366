#include "cache_service/metrics/metrics_server.h"

#include <dirent.h>

#include <deque>
#include <initializer_list>
#include <iterator>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "cache_service/metrics/metrics_http.h"
#include "cache_service/rpc/admin_snapshots.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

#ifndef KVWARDEN_VERSION
#define KVWARDEN_VERSION "dev"
#endif

namespace kvwarden {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

int CountThreads() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

// Builds families sample by sample. A deque: a family's reference stays valid while
// later families are added.
class Families {
 public:
  MetricFamily& Family(const std::string& name, const std::string& help, MetricType type) {
    out_.push_back(MetricFamily{name, help, type, {}});
    return out_.back();
  }
  static void Gauge(MetricFamily& f, std::vector<ClientMetric::Label> labels, double v) {
    ClientMetric m;
    m.label = std::move(labels);
    m.gauge.value = v;
    f.metric.push_back(std::move(m));
  }
  static void Counter(MetricFamily& f, std::vector<ClientMetric::Label> labels, double v) {
    ClientMetric m;
    m.label = std::move(labels);
    m.counter.value = v;
    f.metric.push_back(std::move(m));
  }
  std::vector<MetricFamily> Take() {
    return std::vector<MetricFamily>(std::make_move_iterator(out_.begin()),
                                     std::make_move_iterator(out_.end()));
  }

 private:
  std::deque<MetricFamily> out_;
};

// One family per column, one sample per row labelled `label`=row.name(): the pool and
// tenant listings become metrics without a declaration and an assignment per figure.
template <typename Row>
struct Column {
  const char* name;
  const char* help;
  MetricType type;
  double (*value)(const Row&);
};

template <typename Row, typename Rows>
void AddRows(Families& fs, const char* label, const Rows& rows,
             std::initializer_list<Column<Row>> columns) {
  for (const Column<Row>& c : columns) {
    MetricFamily& f = fs.Family(c.name, c.help, c.type);
    for (const Row& row : rows) {
      if (c.type == MetricType::Counter) {
        Families::Counter(f, {{label, row.name()}}, c.value(row));
      } else {
        Families::Gauge(f, {{label, row.name()}}, c.value(row));
      }
    }
  }
}

// Reads the daemon's state when Prometheus scrapes.
class SnapshotCollector final : public prometheus::Collectable {
 public:
  explicit SnapshotCollector(const ServiceContext& ctx) : ctx_(ctx) {}

  std::vector<MetricFamily> Collect() const override {
    Families fs;
    const MetricType G = MetricType::Gauge, C = MetricType::Counter;
    MetricFamily& info = fs.Family("kvwarden_build_info", "Always 1; the version as a label", G);
    Families::Gauge(info, {{"version", KVWARDEN_VERSION}}, 1);
    Families::Gauge(fs.Family("kvwarden_uptime_seconds", "Seconds since the daemon started", G), {},
                    absl::ToDoubleSeconds(absl::Now() - ctx_.started));

    v1::ListPoolsResponse pools;
    SnapshotPools(ctx_, &pools);
    using P = v1::PoolStats;
    AddRows<P>(fs, "pool", pools.pools(),
               {{"kvwarden_pool_capacity_pages", "Pages a pool can hold", G,
                 [](const P& p) { return static_cast<double>(p.capacity_pages()); }},
                {"kvwarden_pool_used_pages", "Pages held by sequences", G,
                 [](const P& p) { return static_cast<double>(p.used_pages()); }},
                {"kvwarden_pool_free_pages", "Pages free to allocate", G,
                 [](const P& p) { return static_cast<double>(p.free_pages()); }},
                {"kvwarden_pool_shared_pages", "Pages referenced by more than one sequence (forks)",
                 G, [](const P& p) { return static_cast<double>(p.shared_pages()); }},
                {"kvwarden_pool_pinned_pages", "Pages pinned by transfer leases", G,
                 [](const P& p) { return static_cast<double>(p.pinned_pages()); }},
                {"kvwarden_pool_page_bytes", "Bytes of one page (K and V of every head)", G,
                 [](const P& p) { return static_cast<double>(p.page_bytes()); }}});
    MetricFamily& chunks =
        fs.Family("kvwarden_pool_chunks",
                  "Chunks of a pool, by state (total, unowned, bound: kept for one tenant)", G);
    for (const P& p : pools.pools()) {
      Families::Gauge(chunks, {{"pool", p.name()}, {"state", "total"}}, p.chunks_total());
      Families::Gauge(chunks, {{"pool", p.name()}, {"state", "unowned"}}, p.chunks_unowned());
      Families::Gauge(chunks, {{"pool", p.name()}, {"state", "bound"}}, p.chunks_bound());
    }
    Families::Gauge(fs.Family("kvwarden_process_open_fds", "File descriptors the daemon holds", G),
                    {}, pools.open_fds());
    Families::Gauge(
        fs.Family("kvwarden_process_max_fds", "The daemon's RLIMIT_NOFILE soft limit", G), {},
        pools.fd_limit());
    Families::Gauge(fs.Family("kvwarden_process_threads", "Threads of the daemon", G), {},
                    CountThreads());
    Families::Gauge(fs.Family("kvwarden_grpc_connections", "gRPC TCP connections open", G), {},
                    static_cast<double>(pools.grpc_connections()));
    Families::Gauge(
        fs.Family("kvwarden_grpc_connection_limit", "gRPC connections allowed at once", G), {},
        pools.grpc_connection_limit());
    Families::Counter(
        fs.Family("kvwarden_grpc_connections_refused_total",
                  "Connections closed at accept (over a cap, not HTTP/2, no preface in time)", C),
        {}, static_cast<double>(pools.grpc_connections_refused()));

    v1::ListTenantsResponse tenants;
    SnapshotTenants(ctx_, &tenants);
    using T = v1::TenantInfo;
    AddRows<T>(
        fs, "tenant", tenants.tenants(),
        {{"kvwarden_tenant_used_pages", "Pages a tenant holds (all pools)", G,
          [](const T& t) { return static_cast<double>(t.used_pages()); }},
         {"kvwarden_tenant_used_bytes", "Bytes of the pages a tenant holds", G,
          [](const T& t) { return static_cast<double>(t.used_bytes()); }},
         {"kvwarden_tenant_quota_pages", "A tenant's page quota (0: none)", G,
          [](const T& t) { return static_cast<double>(t.quota_pages()); }},
         {"kvwarden_tenant_quota_bytes", "A tenant's byte quota (0: none)", G,
          [](const T& t) { return static_cast<double>(t.quota_bytes()); }},
         {"kvwarden_tenant_peak_pages", "Most pages a tenant held at once", G,
          [](const T& t) { return static_cast<double>(t.peak_pages()); }},
         {"kvwarden_tenant_sequences", "Sequences a tenant holds", G,
          [](const T& t) { return static_cast<double>(t.sequences()); }},
         {"kvwarden_tenant_leases", "Worker leases a tenant holds", G,
          [](const T& t) { return static_cast<double>(t.workers()); }},
         {"kvwarden_tenant_open_streams", "WriteKV/ReadKV/StreamStats streams open", G,
          [](const T& t) { return static_cast<double>(t.open_streams()); }},
         {"kvwarden_tenant_quota_refusals_total",
          "ReserveSlots/ForkSequence calls refused for the tenant's quota", C,
          [](const T& t) { return static_cast<double>(t.quota_refusals()); }},
         {"kvwarden_tenant_limit_refusals_total",
          "Calls refused by one of the tenant's limits (sequences, leases, streams, transfers, "
          "attach connections)",
          C, [](const T& t) { return static_cast<double>(t.limit_refusals()); }}});

    v1::ListAttachmentsResponse attachments;
    SnapshotAttachments(ctx_, &attachments);
    absl::flat_hash_map<std::string, int> per_tenant;
    for (const v1::AttachmentInfo& a : attachments.attachments()) ++per_tenant[a.tenant()];
    MetricFamily& att =
        fs.Family("kvwarden_attach_connections", "Same-host attach connections open, by tenant", G);
    for (const auto& [tenant, n] : per_tenant) Families::Gauge(att, {{"tenant", tenant}}, n);
    return fs.Take();
  }

 private:
  const ServiceContext ctx_;
};

}  // namespace

struct MetricsServer::Impl {
  std::shared_ptr<prometheus::Registry> events;
  std::shared_ptr<SnapshotCollector> snapshots;
  std::unique_ptr<MetricsHttp> http;  // last: its thread reads the two above

  std::string Render() const {
    std::vector<MetricFamily> families = events->Collect();
    std::vector<MetricFamily> snapshot = snapshots->Collect();
    families.insert(families.end(), std::make_move_iterator(snapshot.begin()),
                    std::make_move_iterator(snapshot.end()));
    return prometheus::TextSerializer().Serialize(families);
  }
};

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                                    DaemonMetrics* events,
                                                                    const ServiceContext& ctx) {
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->impl_ = std::make_unique<Impl>();
  s->impl_->events = events->registry();
  s->impl_->snapshots = std::make_shared<SnapshotCollector>(ctx);
  Impl* impl = s->impl_.get();
  absl::StatusOr<std::unique_ptr<MetricsHttp>> http =
      MetricsHttp::Start({address}, [impl] { return impl->Render(); });
  if (!http.ok()) {
    // A bad address stays INVALID_ARGUMENT (exit 2); a port in use is UNAVAILABLE (exit 1).
    return absl::Status(http.status().code(), absl::StrCat("metrics: cannot listen on ", address,
                                                           ": ", http.status().message()));
  }
  s->impl_->http = *std::move(http);
  const size_t colon = address.rfind(':');
  s->address_ = absl::StrCat(address.substr(0, colon), ":", s->impl_->http->port());
  return s;
}

MetricsServer::~MetricsServer() = default;

}  // namespace kvwarden
