// kvwctl: kvwarden's admin CLI. Human tables by default, --json for scripts.
//
// Exit codes: 0 success; 1 the daemon refused the request (its gRPC status code and
// message are printed on one line) or `health` is not SERVING; 2 bad usage; 3 the daemon
// (or, for `cluster`, etcd) cannot be reached.

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kvwctl/fleet_tenants.h"
#include "client/kvwctl/json_out.h"
#include "client/kvwctl/table.h"
#include "common/cluster/cluster_keys.h"
#include "common/cluster/entry_json.h"
#include "common/cluster/etcd_client.h"
#include "common/codec/sha256.h"
#include "google/protobuf/text_format.h"
#include "grpc/health/v1/health.pb.h"
#include "grpc/support/log.h"
#include "kvwarden/admin_client.h"
#include "kvwarden/v1/admin.pb.h"
#include "kvwarden/v1/cluster.pb.h"
#include "kvwarden/v1/config.pb.h"
#include "kvwarden/v1/control.pb.h"

namespace kvwarden::kvwctl {
namespace {

enum ExitCode { kOk = 0, kRefused = 1, kUsage = 2, kUnreachable = 3 };
// Bounds on following ListSequences' pages: a daemon holds at most 16384 sequences per
// tenant and 256 tenants' worth fits easily; a server past these is not a daemon.
constexpr size_t kMaxPages = 100000;
constexpr size_t kMaxListed = 10000000;

struct Globals {
  std::string target = "127.0.0.1:50051";
  std::string token;
  bool json = false;
  int timeout_ms = 5000;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;  // files; TLS when tls_ca is set
  std::string cluster;  // etcd://HOST:PORT[,...]: `kvwctl cluster` reads the nodes there
  std::string cluster_prefix = kDefaultClusterPrefix;
  std::string etcd_ca, etcd_cert, etcd_key, etcd_server_name;  // files; TLS to etcd with etcd_ca
};

// "prefill", "decode", "both": the words the client libraries take.
std::string RoleName(v1::WorkerRole role) {
  switch (role) {
    case v1::WORKER_ROLE_PREFILL:
      return "prefill";
    case v1::WORKER_ROLE_DECODE:
      return "decode";
    case v1::WORKER_ROLE_BOTH:
      return "both";
    default:
      return "unspecified";
  }
}

// Clears the terminal before a redraw (top, seq watch) only on a terminal: piped output
// gets the refreshes one after another, without escape codes.
const char* ClearScreen() { return isatty(STDOUT_FILENO) ? "\033[H\033[2J" : "\n"; }

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string Bytes(uint64_t b) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrCat(b, " B") : absl::StrFormat("%.1f %s", v, kUnits[u]);
}

std::string DTypeName(v1::DType d) {
  switch (d) {
    case v1::DTYPE_FP16:
      return "fp16";
    case v1::DTYPE_BF16:
      return "bf16";
    case v1::DTYPE_FP32:
      return "fp32";
    default:
      return "?";
  }
}

std::string LayoutText(const v1::KvLayout& l) {
  return absl::StrFormat("%ux%ux%u %s /%u", l.num_layers(), l.num_kv_heads(), l.head_dim(),
                         DTypeName(l.dtype()), l.page_tokens());
}

std::string Pct(uint64_t part, uint64_t whole) {
  return whole == 0 ? "-" : absl::StrFormat("%.1f%%", 100.0 * part / whole);
}

class Cli {
 public:
  explicit Cli(const Globals& g) : g_(g) {
    // Connect fails only for an empty target, which the parser's default rules out.
    admin_ = *client::AdminClient::Connect(ClientOptions(g.target));
  }

  client::Options ClientOptions(const std::string& target) const {
    client::Options o;
    o.target = target;
    o.token = g_.token;
    o.timeout = absl::Milliseconds(g_.timeout_ms);
    if (!g_.tls_ca.empty()) {
      o.tls_ca_pem = ReadFileOrEmpty(g_.tls_ca);
      o.tls_key_pem = ReadFileOrEmpty(g_.tls_key);
      o.tls_cert_pem = ReadFileOrEmpty(g_.tls_cert);
      o.tls_server_name = g_.tls_server_name;
    }
    return o;
  }

  int Health() {
    const absl::Time t0 = absl::Now();
    absl::StatusOr<int> serving = admin_->Health();
    const absl::Duration rtt = absl::Now() - t0;
    if (!serving.ok()) return Fail(serving.status());
    absl::StatusOr<v1::PingResponse> pinged = admin_->Ping();
    if (!pinged.ok()) return Fail(pinged.status());
    const v1::PingResponse& ping = *pinged;
    const std::string status = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
        static_cast<grpc::health::v1::HealthCheckResponse::ServingStatus>(*serving));
    if (g_.json) {
      std::cout << absl::StrFormat(
          "{\n  \"status\": \"%s\",\n  \"version\": \"%s\",\n  \"uptime_ms\": %d,\n  \"rtt_us\": "
          "%d\n}\n",
          status, ping.version(), ping.uptime_ms(), absl::ToInt64Microseconds(rtt));
    } else {
      std::cout << Printable(
          absl::StrFormat("%s  %s  kvwardend %s  up %.1fs  rtt %.2f ms\n", status, g_.target,
                          ping.version(), ping.uptime_ms() / 1000.0,
                          absl::ToDoubleMilliseconds(rtt)),
          true);
    }
    if (!g_.token.empty() && !g_.json) {
      if (absl::StatusOr<v1::ListPoolsResponse> pools = admin_->ListPools(); pools.ok()) {
        for (const v1::PoolStats& p : pools->pools()) {
          if (p.draining()) std::cout << "pool " << Printable(p.name()) << ": draining\n";
        }
      }
    }
    return *serving == grpc::health::v1::HealthCheckResponse::SERVING ? kOk : kRefused;
  }

  // Opens etcd from --cluster, or prints why not and gives the exit code.
  int OpenEtcd(const char* command, std::unique_ptr<EtcdClient>* out) const {
    if (g_.cluster.empty()) {
      std::fprintf(stderr,
                   "kvwctl: %s: --cluster=etcd://HOST:PORT (or KVWARDEN_CLUSTER) is required\n",
                   command);
      return kUsage;
    }
    absl::StatusOr<std::vector<std::string>> endpoints = ParseEtcdEndpoints(g_.cluster);
    if (!endpoints.ok()) {
      std::fprintf(stderr, "kvwctl: --cluster: %s\n",
                   Printable(std::string(endpoints.status().message())).c_str());
      return kUsage;
    }
    EtcdClient::Options o;
    o.endpoints = *std::move(endpoints);
    o.call_timeout = absl::Milliseconds(g_.timeout_ms);
    if (!g_.etcd_ca.empty()) {
      o.tls.ca_pem = ReadFileOrEmpty(g_.etcd_ca);
      o.tls.cert_pem = ReadFileOrEmpty(g_.etcd_cert);
      o.tls.key_pem = ReadFileOrEmpty(g_.etcd_key);
      o.tls.server_name = g_.etcd_server_name;
    }
    absl::StatusOr<std::unique_ptr<EtcdClient>> etcd = EtcdClient::Create(std::move(o));
    if (!etcd.ok()) {
      std::fprintf(stderr, "kvwctl: %s\n", Printable(std::string(etcd.status().message())).c_str());
      return kUsage;
    }
    *out = *std::move(etcd);
    return kOk;
  }

  int EtcdFail(const absl::Status& s) const {
    const bool unreachable = s.code() == absl::StatusCode::kUnavailable ||
                             s.code() == absl::StatusCode::kDeadlineExceeded;
    std::fprintf(stderr, "kvwctl: %s%s\n", unreachable ? "cannot reach etcd: " : "",
                 Printable(std::string(s.message())).c_str());
    return unreachable ? kUnreachable : kRefused;
  }

  // Every node's entry (entries that do not parse are skipped with a line on stderr).
  int ReadNodes(EtcdClient& etcd, std::vector<v1::NodeInfo>* nodes) const {
    absl::StatusOr<std::vector<EtcdClient::KeyValue>> kvs =
        etcd.GetPrefix(NodesPrefix(g_.cluster_prefix));
    if (!kvs.ok()) return EtcdFail(kvs.status());
    for (const EtcdClient::KeyValue& kv : *kvs) {
      v1::NodeInfo info;
      if (!ParseEntry(kv.value, &info)) {
        std::fprintf(stderr, "kvwctl: cluster: %s is not a node entry; skipped\n",
                     Printable(kv.key).c_str());
        continue;
      }
      nodes->push_back(std::move(info));
    }
    return kOk;
  }

  // The nodes' entries in etcd (cluster mode: README, "Cluster mode").
  int Cluster() {
    std::unique_ptr<EtcdClient> etcd;
    if (int rc = OpenEtcd("cluster", &etcd); rc != kOk) return rc;
    std::vector<v1::NodeInfo> nodes;
    if (int rc = ReadNodes(*etcd, &nodes); rc != kOk) return rc;
    if (g_.json) {
      std::cout << "[";
      for (size_t i = 0; i < nodes.size(); ++i) {
        std::cout << (i ? ",\n" : "\n");
        if (PrintJson(nodes[i]) != kOk) return kRefused;
      }
      std::cout << (nodes.empty() ? "]\n" : "\n]\n");
      return kOk;
    }
    const int64_t now_ms = absl::ToUnixMillis(absl::Now());
    Table t({"NODE", "ADDRESS", "MIGRATION", "VERSION", "POOLS (free/capacity pages)", "UPDATED",
             "TTL"});
    for (const v1::NodeInfo& n : nodes) {
      std::string pools;
      for (const v1::NodePool& p : n.pools()) {
        absl::StrAppend(&pools, pools.empty() ? "" : ", ", p.name(), " ", p.device(), " ",
                        p.free_pages(), "/", p.capacity_pages());
      }
      const std::string migration =
          n.migration_transport() == "tcp"
              ? absl::StrCat("tcp :", n.data_port())
              : (n.migration_transport().empty() ? "-" : n.migration_transport());
      t.Add({n.node(), n.grpc_address(), migration, n.version(), pools,
             absl::StrFormat("%.1fs ago",
                             std::max<int64_t>(0, now_ms - n.updated_unix_ms()) / 1000.0),
             absl::StrCat(n.lease_ttl_s(), "s")});
    }
    std::cout << Printable(t.Render(), true);
    if (nodes.empty())
      std::cout << "no nodes under " << Printable(NodesPrefix(g_.cluster_prefix)) << "\n";
    return kOk;
  }

  int Pools() {
    absl::StatusOr<v1::ListPoolsResponse> resp_or = admin_->ListPools();
    if (!resp_or.ok()) return Fail(resp_or.status());
    const v1::ListPoolsResponse& resp = *resp_or;
    if (g_.json) return PrintJson(resp);
    Table t({"POOL", "DEVICE", "LAYOUT", "PAGE", "CAPACITY", "USED", "FREE", "SHARED", "PINNED",
             "CHUNKS(owned/total)"});
    Table by_tenant({"POOL", "TENANT", "CHUNKS", "PAGES", "BYTES"});
    for (const v1::PoolStats& p : resp.pools()) {
      t.Add(
          {p.name(), p.device(), LayoutText(p.layout()), Bytes(p.page_bytes()),
           absl::StrCat(p.capacity_pages(), " (", Bytes(p.capacity_pages() * p.page_bytes()), ")"),
           absl::StrCat(p.used_pages(), " (", Pct(p.used_pages(), p.capacity_pages()), ")"),
           absl::StrCat(p.free_pages()), absl::StrCat(p.shared_pages()),
           absl::StrCat(p.pinned_pages()),
           absl::StrCat(
               p.chunks_total() - p.chunks_unowned(), "/", p.chunks_total(),
               p.chunks_bound() > 0 ? absl::StrCat(", ", p.chunks_bound(), " bound") : "")});
      for (const v1::PoolTenantUsage& u : p.tenants()) {
        by_tenant.Add({p.name(), u.tenant(), absl::StrCat(u.chunks()), absl::StrCat(u.pages()),
                       Bytes(u.pages() * p.page_bytes())});
      }
    }
    std::cout << t.Render() << "\n"
              << by_tenant.Render() << "\n"
              << "kvwardend: " << resp.open_fds() << " fds open of " << resp.fd_limit() << "; "
              << resp.grpc_connections() << " gRPC connections of " << resp.grpc_connection_limit()
              << " (" << resp.grpc_connections_refused() << " refused since start)\n";
    return kOk;
  }

  int Tenants() {
    absl::StatusOr<v1::ListTenantsResponse> resp_or = admin_->ListTenants();
    if (!resp_or.ok()) return Fail(resp_or.status());
    const v1::ListTenantsResponse& resp = *resp_or;
    if (g_.json) return PrintJson(resp);
    Table t({"TENANT", "SOURCE", "WEIGHT", "QUOTA", "USED", "USED%", "PAGES", "PEAK_PAGES", "SEQS",
             "WORKERS", "STREAMS", "REFUSED", "LIMIT_REFUSED"});
    for (const v1::TenantInfo& x : resp.tenants()) {
      std::string quota, pct;
      if (x.quota_pages() > 0) {
        quota = absl::StrCat(x.quota_pages(), " pages");
        pct = Pct(x.used_pages(), x.quota_pages());
      } else {
        quota = Bytes(x.quota_bytes());
        pct = Pct(x.used_bytes(), x.quota_bytes());
      }
      t.Add({x.name(),
             absl::StrCat(x.source().empty() ? "config" : x.source(),
                          x.removed() ? " (removed)" : ""),
             absl::StrCat(x.weight()), quota, Bytes(x.used_bytes()), pct,
             absl::StrCat(x.used_pages()), absl::StrCat(x.peak_pages()),
             absl::StrCat(x.sequences()), absl::StrCat(x.workers()), absl::StrCat(x.open_streams()),
             absl::StrCat(x.quota_refusals()), absl::StrCat(x.limit_refusals())});
    }
    std::cout << t.Render();
    return kOk;
  }

  // Every node's tenants summed (--cluster): quotas are per node, usage adds up.
  int ClusterTenants() {
    std::unique_ptr<EtcdClient> etcd;
    if (int rc = OpenEtcd("tenants", &etcd); rc != kOk) return rc;
    std::vector<v1::NodeInfo> nodes;
    if (int rc = ReadNodes(*etcd, &nodes); rc != kOk) return rc;
    absl::StatusOr<std::vector<EtcdClient::KeyValue>> fleet =
        etcd->GetPrefix(TenantsPrefix(g_.cluster_prefix));
    if (!fleet.ok()) return EtcdFail(fleet.status());
    std::vector<std::pair<std::string, v1::ListTenantsResponse>> by_node;
    std::vector<std::string> unreachable;
    for (const v1::NodeInfo& n : nodes) {
      absl::StatusOr<std::unique_ptr<client::AdminClient>> node =
          client::AdminClient::Connect(ClientOptions(n.grpc_address()));
      absl::StatusOr<v1::ListTenantsResponse> resp =
          node.ok() ? (*node)->ListTenants() : node.status();
      if (!resp.ok()) {
        unreachable.push_back(absl::StrCat(n.node(), " (", resp.status().message(), ")"));
        continue;
      }
      by_node.emplace_back(n.node(), *std::move(resp));
    }
    std::vector<ClusterTenant> sums = SumTenants(by_node);
    // Fleet-wide entries no node serves (refused everywhere, or no node yet) show too.
    for (const EtcdClient::KeyValue& kv : *fleet) {
      const std::string name = kv.key.substr(TenantsPrefix(g_.cluster_prefix).size());
      if (std::none_of(sums.begin(), sums.end(),
                       [&](const ClusterTenant& c) { return c.name == name; })) {
        ClusterTenant c;
        c.name = name;
        c.source = "cluster";
        if (absl::StatusOr<v1::FleetTenant> t = ParseFleetTenant(kv.value); t.ok()) {
          c.quota_pages = t->quota_pages();
          c.quota_bytes = t->quota_bytes();
        }
        sums.push_back(std::move(c));
      }
    }
    if (g_.json) {
      std::cout << "{\n  \"tenants\": [";
      for (size_t i = 0; i < sums.size(); ++i) {
        const ClusterTenant& c = sums[i];
        std::string node_list;
        for (size_t j = 0; j < c.nodes.size(); ++j)
          absl::StrAppend(&node_list, j ? ", " : "", "\"", c.nodes[j], "\"");
        std::cout << (i ? "," : "")
                  << absl::StrFormat(
                         "\n    {\"name\": \"%s\", \"source\": \"%s\", \"nodes\": [%s], "
                         "\"quota_pages_per_node\": %d, \"quota_bytes_per_node\": %d, "
                         "\"used_pages\": %d, \"used_bytes\": %d, \"sequences\": %d, "
                         "\"workers\": %d, \"quota_refusals\": %d}",
                         c.name, c.source, node_list, c.quota_pages, c.quota_bytes, c.used_pages,
                         c.used_bytes, c.sequences, c.workers, c.quota_refusals);
      }
      std::cout << (sums.empty() ? "" : "\n  ") << "],\n  \"nodes_answered\": " << by_node.size()
                << ",\n  \"nodes_unreachable\": " << unreachable.size() << "\n}\n";
      return unreachable.empty() ? kOk : kUnreachable;
    }
    Table t(
        {"TENANT", "SOURCE", "NODES", "QUOTA/NODE", "USED", "PAGES", "SEQS", "WORKERS", "REFUSED"});
    for (const ClusterTenant& c : sums) {
      const std::string quota =
          c.quota_pages > 0 ? absl::StrCat(c.quota_pages, " pages") : Bytes(c.quota_bytes);
      t.Add({c.name, c.source, absl::StrCat(c.nodes.size(), "/", by_node.size()), quota,
             Bytes(c.used_bytes), absl::StrCat(c.used_pages), absl::StrCat(c.sequences),
             absl::StrCat(c.workers), absl::StrCat(c.quota_refusals)});
    }
    std::cout << Printable(t.Render(), true);
    std::cout << by_node.size() << " of " << nodes.size()
              << " nodes answered; quotas are enforced per node\n";
    for (const std::string& u : unreachable)
      std::fprintf(stderr, "kvwctl: cannot reach node %s\n", Printable(u).c_str());
    return unreachable.empty() ? kOk : kUnreachable;
  }

  // Writes a fleet-wide tenant into etcd (every node applies it within a second).
  int TenantsSet(FleetTenantEdit edit, const std::string& token_file) {
    std::unique_ptr<EtcdClient> etcd;
    if (int rc = OpenEtcd("tenants set", &etcd); rc != kOk) return rc;
    if (!token_file.empty()) {
      const std::string token(absl::StripAsciiWhitespace(ReadFileOrEmpty(token_file)));
      if (token.empty()) {
        std::fprintf(stderr, "kvwctl: tenants set: --token-file %s: unreadable or empty\n",
                     Printable(token_file).c_str());
        return kUsage;
      }
      edit.token_sha256 = Sha256Hex(token);
    } else if (edit.token_sha256) {
      std::string digest;
      if (!ParseSha256Hex(*edit.token_sha256, &digest)) {
        std::fprintf(stderr, "kvwctl: tenants set: --token-sha256 must be 64 hex digits\n");
        return kUsage;
      }
      edit.token_sha256 = absl::AsciiStrToLower(*edit.token_sha256);
    }
    const std::string key = TenantKey(g_.cluster_prefix, edit.name);
    absl::StatusOr<std::optional<EtcdClient::KeyValue>> current = etcd->Get(key);
    if (!current.ok()) return EtcdFail(current.status());
    std::optional<v1::FleetTenant> before;
    if (current->has_value()) {
      absl::StatusOr<v1::FleetTenant> parsed = ParseFleetTenant((*current)->value);
      if (parsed.ok()) before = *std::move(parsed);  // a broken entry is replaced whole
    }
    absl::StatusOr<v1::FleetTenant> after = EditFleetTenant(before, edit);
    if (!after.ok()) {
      std::fprintf(stderr, "kvwctl: tenants set: %s\n",
                   Printable(std::string(after.status().message())).c_str());
      return kUsage;
    }
    if (absl::Status s = etcd->Put(key, FleetTenantJson(*after)); !s.ok()) return EtcdFail(s);
    if (g_.json) return PrintJson(*after);
    std::cout << Printable(absl::StrCat("tenant ", edit.name, before ? " changed" : " added",
                                        " at ", key, "; every node applies it at once"))
              << "\n";
    return kOk;
  }

  int TenantsRemove(const std::string& name) {
    std::unique_ptr<EtcdClient> etcd;
    if (int rc = OpenEtcd("tenants rm", &etcd); rc != kOk) return rc;
    const std::string key = TenantKey(g_.cluster_prefix, name);
    absl::StatusOr<int64_t> deleted = etcd->Delete(key);
    if (!deleted.ok()) return EtcdFail(deleted.status());
    if (*deleted == 0) {
      std::fprintf(stderr, "kvwctl: NOT_FOUND: no fleet-wide tenant at %s\n",
                   Printable(key).c_str());
      return kRefused;
    }
    std::cout
        << Printable(absl::StrCat(
               "tenant ", name, " removed from ", key,
               "; nodes refuse its token at once, and what it holds goes as its leases lapse"))
        << "\n";
    return kOk;
  }

  int Workers() {
    absl::StatusOr<v1::ListWorkersResponse> resp_or = admin_->ListWorkers();
    if (!resp_or.ok()) return Fail(resp_or.status());
    const v1::ListWorkersResponse& resp = *resp_or;
    if (g_.json) return PrintJson(resp);
    Table t({"LEASE", "TENANT", "NAME", "ROLE", "TTL", "EXPIRES_IN", "SEQS"});
    for (const v1::WorkerInfo& w : resp.workers()) {
      t.Add({absl::StrCat(w.lease_id()), w.tenant(), w.name(), RoleName(w.role()),
             absl::StrCat(w.ttl_ms(), "ms"), absl::StrCat(w.expires_in_ms(), "ms"),
             absl::StrCat(w.sequences())});
    }
    std::cout << t.Render();
    return kOk;
  }

  int Transfers() {
    absl::StatusOr<v1::ListTransfersResponse> resp_or = admin_->ListTransfers();
    if (!resp_or.ok()) return Fail(resp_or.status());
    const v1::ListTransfersResponse& resp = *resp_or;
    if (g_.json) return PrintJson(resp);
    Table t({"ID", "TENANT", "LEASE", "SEQ", "POOL", "MODE", "LAYERS", "PAGES", "PINNED", "AGE",
             "EXPIRES_IN"});
    for (const v1::TransferInfo& x : resp.transfers()) {
      t.Add({absl::StrCat(x.transfer_id()), x.tenant(), absl::StrCat(x.lease_id()),
             absl::StrCat(x.sequence_id()), x.pool(), x.mode(),
             absl::StrCat(x.layer_start(), "..", x.layer_start() + x.layer_count() - 1),
             absl::StrCat(x.first_page(), "+", x.num_pages()), absl::StrCat(x.pinned_pages()),
             absl::StrCat(x.age_ms(), "ms"), absl::StrCat(x.expires_in_ms(), "ms")});
    }
    std::cout << t.Render();
    return kOk;
  }

  int Attached() {
    absl::StatusOr<v1::ListAttachmentsResponse> resp_or = admin_->ListAttachments();
    if (!resp_or.ok()) return Fail(resp_or.status());
    const v1::ListAttachmentsResponse& resp = *resp_or;
    if (g_.json) return PrintJson(resp);
    Table t({"ID", "TENANT", "LEASE", "PID", "POOL", "ACCESS", "CHUNKS", "AGE"});
    for (const v1::AttachmentInfo& x : resp.attachments()) {
      t.Add({absl::StrCat(x.attachment_id()), x.tenant(), absl::StrCat(x.lease_id()),
             absl::StrCat(x.pid()), x.pool(), x.writable() ? "read-write" : "read-only",
             absl::StrCat(x.chunks()), absl::StrCat(x.age_ms(), "ms")});
    }
    std::cout << t.Render();
    return kOk;
  }

  int Sequences(const std::string& tenant, const std::string& pool) {
    v1::ListSequencesRequest req;
    req.set_tenant(tenant);
    req.set_pool(pool);
    v1::ListSequencesResponse resp;
    // Page by page: one answer would exceed gRPC's message limit past ~50k sequences. A
    // server whose tokens repeat, or that pages on past what any daemon holds, is refused
    // rather than followed without end.
    absl::flat_hash_set<std::string> seen;
    for (bool first = true; first || !req.page_token().empty(); first = false) {
      absl::StatusOr<v1::ListSequencesResponse> page_or = admin_->ListSequences(req);
      if (!page_or.ok()) return Fail(page_or.status());
      v1::ListSequencesResponse& page = *page_or;
      for (v1::SequenceInfo& q : *page.mutable_sequences()) *resp.add_sequences() = std::move(q);
      if (!page.next_page_token().empty() &&
          (!seen.insert(page.next_page_token()).second || seen.size() > kMaxPages ||
           static_cast<size_t>(resp.sequences_size()) > kMaxListed)) {
        return Fail(
            absl::DataLossError(absl::StrFormat("the daemon's page tokens do not end (%d pages, %d "
                                                "sequences, a token repeated or past the bound)",
                                                seen.size(), resp.sequences_size())));
      }
      req.set_page_token(page.next_page_token());
    }
    if (g_.json) return PrintJson(resp);
    Table t({"ID", "TENANT", "POOL", "LEASE", "TOKENS", "MAX", "PAGES", "SHARED", "EPOCH", "POLICY",
             "PARENT"});
    for (const v1::SequenceInfo& q : resp.sequences()) {
      t.Add({absl::StrCat(q.sequence_id()), q.tenant(), q.pool(), absl::StrCat(q.lease_id()),
             absl::StrCat(q.num_tokens()), absl::StrCat(q.max_tokens()),
             absl::StrCat(q.pages_held()), absl::StrCat(q.shared_pages()), absl::StrCat(q.epoch()),
             q.policy(), q.parent_sequence_id() ? absl::StrCat(q.parent_sequence_id()) : "-"});
    }
    std::cout << t.Render();
    return kOk;
  }

  int Drain(const std::string& pool, bool draining) {
    absl::StatusOr<v1::PoolStats> resp_or = admin_->SetPoolDraining(pool, draining);
    if (!resp_or.ok()) return Fail(resp_or.status());
    const v1::PoolStats& resp = *resp_or;
    if (g_.json) return PrintJson(resp);
    std::cout << absl::StrFormat("pool %s: %s (%d pages in use)\n", Printable(resp.name()),
                                 resp.draining()
                                     ? "draining: new sequences are refused, existing ones finish"
                                     : "accepting new sequences",
                                 resp.used_pages());
    return kOk;
  }

  int Migrate(uint64_t id, const std::string& node, uint32_t hold_ms) {
    v1::MigrateSequenceRequest req;
    req.set_sequence_id(id);
    req.set_target_node(node);
    req.set_hold_ms(hold_ms);
    // The whole migration, whatever --timeout-ms says for ordinary calls.
    absl::StatusOr<v1::MigrateSequenceResponse> resp_or =
        admin_->MigrateSequence(req, std::max(absl::Minutes(1), absl::Milliseconds(g_.timeout_ms)));
    if (!resp_or.ok()) return Fail(resp_or.status());
    const v1::MigrateSequenceResponse& resp = *resp_or;
    if (g_.json) return PrintJson(resp);
    std::cout << absl::StrFormat(
        "sequence %d moved to node %s (%s) as sequence %d under lease %d: %s in %.1f ms\n", id,
        Printable(resp.node()), Printable(resp.grpc_address()), resp.sequence_id(), resp.lease_id(),
        Bytes(resp.bytes_moved()), resp.duration_us() / 1000.0);
    return kOk;
  }

  int Config() {
    absl::StatusOr<v1::GetConfigResponse> resp_or = admin_->GetConfig();
    if (!resp_or.ok()) return Fail(resp_or.status());
    const v1::GetConfigResponse& resp = *resp_or;
    if (g_.json) {
      // The config as an object, not a text blob.
      v1::DaemonConfig config;
      if (!google::protobuf::TextFormat::ParseFromString(resp.text(), &config)) {
        std::fprintf(stderr, "kvwctl: the daemon's config does not parse as a DaemonConfig\n");
        return kRefused;
      }
      std::cout << "{\"path\": " << JsonString(resp.path())
                << ", \"config\": " << ToJson(config, true) << "}\n";
      return kOk;
    }
    std::cout << "# " << Printable(resp.path()) << " (tokens redacted)\n"
              << Printable(resp.text(), true);
    return kOk;
  }

  // Live usage like top(1): pools and tenants every interval, with rates from the last.
  int Top(int interval_ms, int count) {
    v1::ListTenantsResponse last_tenants;
    v1::ListPoolsResponse last_pools;
    absl::Time last = absl::InfinitePast();
    for (int i = 0; count == 0 || i < count; ++i) {
      if (i > 0) absl::SleepFor(absl::Milliseconds(interval_ms));
      absl::StatusOr<v1::ListPoolsResponse> pools_or = admin_->ListPools();
      if (!pools_or.ok()) return Fail(pools_or.status());
      absl::StatusOr<v1::ListTenantsResponse> tenants_or = admin_->ListTenants();
      if (!tenants_or.ok()) return Fail(tenants_or.status());
      v1::ListPoolsResponse& pools = *pools_or;
      v1::ListTenantsResponse& tenants = *tenants_or;
      const absl::Time now = absl::Now();
      const double dt = last == absl::InfinitePast() ? 0 : absl::ToDoubleSeconds(now - last);
      auto rate = [dt](double now_v, double then_v) {
        return dt > 0 ? (now_v - then_v) / dt : 0.0;
      };
      auto find_pool = [&](const std::string& n) -> const v1::PoolStats* {
        for (const v1::PoolStats& p : last_pools.pools()) {
          if (p.name() == n) return &p;
        }
        return nullptr;
      };
      auto find_tenant = [&](const std::string& n) -> const v1::TenantInfo* {
        for (const v1::TenantInfo& t : last_tenants.tenants()) {
          if (t.name() == n) return &t;
        }
        return nullptr;
      };
      if (g_.json) {
        // One object per refresh, one line each: easy to stream into jq.
        std::string line =
            absl::StrFormat("{\"time\":\"%s\",\"pools\":[",
                            absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", now, absl::UTCTimeZone()));
        for (int k = 0; k < pools.pools_size(); ++k) {
          const v1::PoolStats& p = pools.pools(k);
          const v1::PoolStats* q = find_pool(p.name());
          absl::StrAppendFormat(&line,
                                "%s{\"pool\":%s,\"used_pages\":%d,\"capacity_pages\":%d,"
                                "\"pages_per_s\":%.1f,\"draining\":%s}",
                                k ? "," : "", JsonString(p.name()), p.used_pages(),
                                p.capacity_pages(), q ? rate(p.used_pages(), q->used_pages()) : 0.0,
                                p.draining() ? "true" : "false");
        }
        line += "],\"tenants\":[";
        for (int k = 0; k < tenants.tenants_size(); ++k) {
          const v1::TenantInfo& t = tenants.tenants(k);
          const v1::TenantInfo* q = find_tenant(t.name());
          absl::StrAppendFormat(&line,
                                "%s{\"tenant\":%s,\"used_pages\":%d,\"used_bytes\":%d,"
                                "\"quota_pages\":%d,\"quota_bytes\":%d,"
                                "\"sequences\":%d,\"pages_per_s\":%.1f,\"refusals_per_s\":%.2f}",
                                k ? "," : "", JsonString(t.name()), t.used_pages(), t.used_bytes(),
                                t.quota_pages(), t.quota_bytes(), t.sequences(),
                                q ? rate(t.used_pages(), q->used_pages()) : 0.0,
                                q ? rate(t.quota_refusals(), q->quota_refusals()) : 0.0);
        }
        std::cout << line << "]}\n";
      } else {
        std::cout << ClearScreen() << "kvwctl top  " << g_.target << "  "
                  << absl::FormatTime("%H:%M:%S", now, absl::LocalTimeZone()) << "  every "
                  << interval_ms << " ms; " << pools.grpc_connections() << " connections, "
                  << pools.open_fds() << " fds\n\n";
        Table pt({"POOL", "USED", "USED%", "PAGES/S", "SHARED", "PINNED", "STATE"});
        for (const v1::PoolStats& p : pools.pools()) {
          const v1::PoolStats* q = find_pool(p.name());
          pt.Add({p.name(), absl::StrCat(p.used_pages(), "/", p.capacity_pages()),
                  Pct(p.used_pages(), p.capacity_pages()),
                  absl::StrFormat("%+.1f", q ? rate(p.used_pages(), q->used_pages()) : 0.0),
                  absl::StrCat(p.shared_pages()), absl::StrCat(p.pinned_pages()),
                  p.draining() ? "draining" : "serving"});
        }
        Table tt(
            {"TENANT", "USED", "OF QUOTA", "PAGES/S", "SEQS", "WORKERS", "STREAMS", "REFUSED/S"});
        for (const v1::TenantInfo& t : tenants.tenants()) {
          const v1::TenantInfo* q = find_tenant(t.name());
          tt.Add(
              {t.name(), Bytes(t.used_bytes()),
               t.quota_pages() ? Pct(t.used_pages(), t.quota_pages())
                               : Pct(t.used_bytes(), t.quota_bytes()),
               absl::StrFormat("%+.1f", q ? rate(t.used_pages(), q->used_pages()) : 0.0),
               absl::StrCat(t.sequences()), absl::StrCat(t.workers()),
               absl::StrCat(t.open_streams()),
               absl::StrFormat("%.2f", q ? rate(t.quota_refusals(), q->quota_refusals()) : 0.0)});
        }
        std::cout << pt.Render() << "\n" << tt.Render();
      }
      std::cout.flush();
      last_pools = std::move(pools);
      last_tenants = std::move(tenants);
      last = now;
    }
    return kOk;
  }

  // Redraws `seq show` every interval until the sequence is gone or the user stops it.
  int WatchSequence(uint64_t id, int interval_ms, int count) {
    for (int i = 0; count == 0 || i < count; ++i) {
      if (i > 0) absl::SleepFor(absl::Milliseconds(interval_ms));
      if (!g_.json)
        std::cout << ClearScreen()
                  << absl::FormatTime("%H:%M:%S", absl::Now(), absl::LocalTimeZone()) << "  every "
                  << interval_ms << " ms\n";
      if (int rc = ShowSequence(id, /*one_line=*/true); rc != kOk) return rc;
      std::cout.flush();
    }
    return kOk;
  }

  int ShowSequence(uint64_t id, bool one_line = false) {
    absl::StatusOr<v1::SequenceInfo> q_or = admin_->DescribeSequence(id);
    if (!q_or.ok()) return Fail(q_or.status());
    const v1::SequenceInfo& q = *q_or;
    if (g_.json) return PrintJson(q, one_line);
    const v1::KvLayout& l = q.layout();
    std::cout << Printable(
        absl::StrFormat(
            "sequence %d  tenant %s  pool %s  lease %d  policy %s\n"
            "layout     %u layers x %u kv heads x %u dim %s, %u tokens/page\n"
            "tokens     %u of max %u   epoch %d   pages %u (%u shared)%s\n"
            "policy     %s   decode steps %d\n%s\n",
            q.sequence_id(), q.tenant(), q.pool(), q.lease_id(), q.policy(), l.num_layers(),
            l.num_kv_heads(), l.head_dim(), DTypeName(l.dtype()), l.page_tokens(), q.num_tokens(),
            q.max_tokens(), q.epoch(), q.pages_held(), q.shared_pages(),
            q.parent_sequence_id() ? absl::StrCat("   forked from ", q.parent_sequence_id()) : "",
            q.policy_summary(), q.decode_steps(),
            q.budget_note().empty() ? "" : absl::StrCat("pressure   ", q.budget_note(), "\n")),
        true);
    // One row per layer; per head "live/budget", then "-evicted" once retention ran and
    // the policy's figures ("low_max=2 low_mean=0.5" for scissorhands).
    std::vector<std::string> header = {"LAYER", "PAGES"};
    for (uint32_t h = 0; h < l.num_kv_heads(); ++h)
      header.push_back(absl::StrCat("H", h, " live/budget"));
    Table t(std::move(header));
    for (const v1::LayerInfo& layer : q.layers()) {
      std::vector<std::string> row = {absl::StrCat(layer.layer()), absl::StrCat(layer.num_pages())};
      for (const v1::HeadInfo& h : layer.heads()) {
        std::string cell = absl::StrCat(h.live_slots(), "/", h.budget());
        if (h.evicted() > 0) absl::StrAppend(&cell, " -", h.evicted());
        for (const v1::HeadFigure& f : h.figures())
          absl::StrAppend(&cell, absl::StrFormat(" %s=%.3g", f.name(), f.value()));
        row.push_back(std::move(cell));
      }
      t.Add(std::move(row));
    }
    std::cout << t.Render();
    return kOk;
  }

 private:
  int Fail(const absl::Status& s) const {
    const bool unreachable = s.code() == absl::StatusCode::kUnavailable ||
                             s.code() == absl::StatusCode::kDeadlineExceeded;
    const int c = static_cast<int>(s.code());
    std::string code = absl::StrCat(c);
    static constexpr const char* kNames[] = {"OK",
                                             "CANCELLED",
                                             "UNKNOWN",
                                             "INVALID_ARGUMENT",
                                             "DEADLINE_EXCEEDED",
                                             "NOT_FOUND",
                                             "ALREADY_EXISTS",
                                             "PERMISSION_DENIED",
                                             "RESOURCE_EXHAUSTED",
                                             "FAILED_PRECONDITION",
                                             "ABORTED",
                                             "OUT_OF_RANGE",
                                             "UNIMPLEMENTED",
                                             "INTERNAL",
                                             "UNAVAILABLE",
                                             "DATA_LOSS",
                                             "UNAUTHENTICATED"};
    if (c >= 0 && c <= 16) code = kNames[c];
    std::string msg = Printable(std::string(s.message()));  // one line, no terminal codes
    // A closed or reset connection is what a TLS mismatch looks like from here: say so.
    if (unreachable &&
        (absl::StrContains(msg, "Socket closed") || absl::StrContains(msg, "Connection reset"))) {
      msg += g_.tls_ca.empty()
                 ? " (a daemon serving TLS closes plaintext connections: pass --tls-ca)"
             : g_.tls_cert.empty()
                 ? " (the daemon may require a client certificate: --tls-cert and --tls-key)"
                 : " (check that the daemon trusts this client certificate)";
    }
    std::fprintf(stderr, "kvwctl: %s%s: %s\n", unreachable ? "cannot reach daemon: " : "",
                 code.c_str(), msg.c_str());
    return unreachable ? kUnreachable : kRefused;
  }

  // `one_line`: for streams of objects (seq watch), one object per line.
  int PrintJson(const google::protobuf::Message& m, bool one_line = false) const {
    std::cout << ToJson(m, /*pretty=*/!one_line);
    if (one_line) std::cout << "\n";
    return kOk;
  }

  const Globals g_;
  std::unique_ptr<client::AdminClient> admin_;
};

// Completes subcommands, their subcommands and every option, from the parser itself.
// Completes subcommands (aliases too), their subcommands' flags (`seq watch --count`) and
// `completion`'s one argument.
std::string BashCompletion(const CLI::App& app) {
  const auto all = [](const CLI::App*) { return true; };
  // A subcommand's name and aliases, as a bash case pattern and as words.
  const auto names = [](const CLI::App* a, const char* sep) {
    std::string n = a->get_name();
    for (const std::string& alias : a->get_aliases()) absl::StrAppend(&n, sep, alias);
    return n;
  };
  // What may follow a subcommand: its subcommands, its long options, its choices.
  const auto words_after = [&](const CLI::App* a) {
    std::string words;
    for (const CLI::App* s : a->get_subcommands(all)) absl::StrAppend(&words, " ", names(s, " "));
    for (const CLI::Option* o : a->get_options()) {
      for (const std::string& n : o->get_lnames()) absl::StrAppend(&words, " --", n);
    }
    if (a->get_name() == "completion") absl::StrAppend(&words, " bash");
    return words;
  };
  std::string top_words, cases;
  for (const CLI::App* sub : app.get_subcommands(all)) {
    absl::StrAppend(&top_words, " ", names(sub, " "));
    absl::StrAppend(&cases, "    ", names(sub, "|"), ") words=\"", words_after(sub), "\" ;;\n");
    for (const CLI::App* s2 : sub->get_subcommands(all)) {
      absl::StrAppend(&cases, "    ", names(s2, "|"), ") words=\"", words_after(s2), "\" ;;\n");
    }
  }
  for (const CLI::Option* o : app.get_options()) {
    for (const std::string& n : o->get_lnames()) absl::StrAppend(&top_words, " --", n);
  }
  return absl::StrCat(
      "# bash completion for kvwctl: source <(kvwctl completion bash)\n"
      "_kvwctl() {\n"
      "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" words=\"",
      top_words,
      "\" w\n"
      "  for w in \"${COMP_WORDS[@]:1:COMP_CWORD-1}\"; do\n"
      "    case \"$w\" in\n",
      cases,
      "    esac\n"
      "  done\n"
      "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
      "}\n"
      "complete -F _kvwctl kvwctl\n");
}

int Main(int argc, char** argv) {
  Globals g;
  if (const char* t = std::getenv("KVWARDEN_TARGET")) g.target = t;
  if (const char* t = std::getenv("KVWARDEN_ADMIN_TOKEN")) g.token = t;
  CLI::App app{"kvwctl: admin CLI for kvwardend"};
  app.require_subcommand(1);
  app.add_option("--target", g.target, "Daemon HOST:PORT (env KVWARDEN_TARGET)")
      ->capture_default_str();
  app.add_option("--token", g.token, "Admin token (env KVWARDEN_ADMIN_TOKEN)");
  app.add_flag("--json", g.json, "Print JSON instead of tables");
  app.add_option("--timeout-ms", g.timeout_ms, "Per-call deadline")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  if (const char* t = std::getenv("KVWARDEN_TLS_CA")) g.tls_ca = t;
  if (const char* t = std::getenv("KVWARDEN_TLS_CERT")) g.tls_cert = t;
  if (const char* t = std::getenv("KVWARDEN_TLS_KEY")) g.tls_key = t;
  app.add_option("--tls-ca", g.tls_ca,
                 "PEM file of the CA that signed the daemon's certificate: connect with TLS "
                 "(env KVWARDEN_TLS_CA)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", g.tls_cert,
                 "Client certificate PEM for mutual TLS (env KVWARDEN_TLS_CERT)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", g.tls_key, "Client key PEM for mutual TLS (env KVWARDEN_TLS_KEY)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-server-name", g.tls_server_name,
                 "Name to check the daemon's certificate against "
                 "(default: the target's host)");
  if (const char* c = std::getenv("KVWARDEN_CLUSTER")) g.cluster = c;
  app.add_option(
      "--cluster", g.cluster,
      "etcd://HOST:PORT[,HOST:PORT...] of the cluster, for `cluster` and `tenants` (every "
      "node's) (env KVWARDEN_CLUSTER)");
  app.add_option("--cluster-prefix", g.cluster_prefix, "The cluster's etcd key prefix")
      ->capture_default_str();
  if (const char* t = std::getenv("KVWARDEN_ETCD_CA")) g.etcd_ca = t;
  if (const char* t = std::getenv("KVWARDEN_ETCD_CERT")) g.etcd_cert = t;
  if (const char* t = std::getenv("KVWARDEN_ETCD_KEY")) g.etcd_key = t;
  app.add_option("--etcd-ca", g.etcd_ca,
                 "PEM file of the CA that signed etcd's certificate: talk to etcd over TLS "
                 "(env KVWARDEN_ETCD_CA)")
      ->check(CLI::ExistingFile);
  app.add_option("--etcd-cert", g.etcd_cert,
                 "Client certificate PEM for etcd --client-cert-auth (env KVWARDEN_ETCD_CERT)")
      ->check(CLI::ExistingFile);
  app.add_option("--etcd-key", g.etcd_key, "Its key (env KVWARDEN_ETCD_KEY)")
      ->check(CLI::ExistingFile);
  app.add_option("--etcd-server-name", g.etcd_server_name,
                 "Name to check etcd's certificate against (default: the endpoint's host)");
  app.footer(
      "Exit codes: 0 ok; 1 the daemon refused (status and message on one line on stderr), or "
      "`health` found it not SERVING; 2 bad usage; 3 daemon (or etcd) unreachable.");

  auto* health = app.add_subcommand("health", "Health check, version and uptime (no token needed)");
  auto* pools = app.add_subcommand("pools", "Pools: capacity, usage, chunks per tenant");
  auto* tenants = app.add_subcommand(
      "tenants",
      "Tenants: quota, usage, sequences, refusals (with --cluster: summed over every node)");
  tenants->require_subcommand(0, 1);
  FleetTenantEdit edit;
  std::string token_file, token_sha256;
  uint64_t quota_bytes = 0, quota_pages = 0;
  uint32_t weight = 0, max_sequences = 0, max_worker_leases = 0, max_open_streams = 0;
  auto* tenants_set = tenants->add_subcommand(
      "set",
      "Add or change a fleet-wide tenant in etcd (needs --cluster); unset options keep "
      "their values");
  tenants_set->add_option("NAME", edit.name, "Tenant name")->required();
  auto* token_file_opt = tenants_set->add_option(
      "--token-file", token_file, "File holding the tenant's token (etcd keeps its SHA-256 only)");
  tenants_set
      ->add_option("--token-sha256", token_sha256,
                   "The token's SHA-256 as hex, instead of the file")
      ->excludes(token_file_opt);
  auto* quota_bytes_opt = tenants_set->add_option("--quota-bytes", quota_bytes, "Quota per node");
  auto* quota_pages_opt = tenants_set->add_option("--quota-pages", quota_pages, "Quota per node");
  auto* weight_opt = tenants_set->add_option("--weight", weight, "Share under memory pressure")
                         ->check(CLI::PositiveNumber);
  auto* max_sequences_opt = tenants_set->add_option("--max-sequences", max_sequences);
  auto* max_leases_opt = tenants_set->add_option("--max-worker-leases", max_worker_leases);
  auto* max_streams_opt = tenants_set->add_option("--max-open-streams", max_open_streams);
  std::string rm_name;
  auto* tenants_rm =
      tenants->add_subcommand("rm", "Remove a fleet-wide tenant from etcd (needs --cluster)");
  tenants_rm->add_option("NAME", rm_name, "Tenant name")->required();
  auto* workers =
      app.add_subcommand("workers", "Registered workers and their leases (alias: leases)");
  workers->alias("leases");
  auto* transfers =
      app.add_subcommand("transfers", "Active transfer leases and the pages they pin");
  auto* attached = app.add_subcommand("attached", "Clients attached over the attach socket");
  std::string tenant, pool;
  auto* seqs = app.add_subcommand("seqs", "List sequences");
  seqs->add_option("--tenant", tenant, "Only this tenant's sequences");
  seqs->add_option("--pool", pool, "Only sequences in this pool");
  auto* seq = app.add_subcommand("seq", "One sequence");
  seq->require_subcommand(1);
  uint64_t id = 0;
  auto* show =
      seq->add_subcommand("show", "Layout, pages, epoch, per-layer/per-head live slots and budget");
  show->add_option("ID", id, "Sequence id")->required();
  std::string to_node;
  uint32_t hold_ms = 0;
  auto* migrate = seq->add_subcommand(
      "migrate",
      "Move a sequence to another node of the cluster (byte for byte; it stays here on any error)");
  migrate->add_option("ID", id, "Sequence id")->required();
  migrate->add_option("--to", to_node, "The target node (kvwctl cluster lists them)")->required();
  migrate->add_option(
      "--hold-ms", hold_ms,
      "How long the target holds it for a worker to fork it (0 = 30 s, at most 300 s)");
  auto* watch = seq->add_subcommand("watch", "Redraw `seq show` live");
  int interval_ms = 1000, count = 0;
  watch->add_option("ID", id, "Sequence id")->required();
  watch->add_option("--interval-ms", interval_ms, "Refresh period")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  watch->add_option("--count", count, "Stop after this many refreshes (0 = until interrupted)");
  std::string drain_pool;
  auto* drain =
      app.add_subcommand("drain",
                         "Refuse new sequences in a pool; existing ones finish (health turns "
                         "NOT_SERVING once every pool drains)");
  drain->add_option("POOL", drain_pool, "Pool name")->required();
  auto* undrain = app.add_subcommand("undrain", "Accept new sequences in a pool again");
  undrain->add_option("POOL", drain_pool, "Pool name")->required();
  auto* config = app.add_subcommand("config", "The running config, tokens redacted");
  auto* cluster = app.add_subcommand(
      "cluster",
      "Nodes of the cluster (from etcd; needs --cluster): address, pools, free pages, entry age");
  auto* top = app.add_subcommand(
      "top", "Live per-pool and per-tenant usage with rates, refreshed like top");
  top->add_option("--interval-ms", interval_ms, "Refresh period")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  top->add_option("--count", count, "Stop after this many refreshes (0 = until interrupted)");
  std::string shell;
  auto* completion = app.add_subcommand("completion",
                                        "Print a shell completion script: "
                                        "source <(kvwctl completion bash)");
  completion->add_option("SHELL", shell, "bash")->required()->check(CLI::IsMember({"bash"}));
  for (auto* sub :
       {health, pools, tenants, tenants_set, tenants_rm, workers, transfers, attached, seqs, seq,
        show, watch, migrate, drain, undrain, config, cluster, top, completion}) {
    sub->fallthrough();
  }

  // The command word, found past the global options: an unknown one is named in one line
  // (CLI11 would say only that a subcommand is required).
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (!arg.empty() && arg[0] == '-') {
      if (arg.find('=') != std::string::npos) continue;
      const CLI::Option* opt = app.get_option_no_throw(arg);
      if (opt != nullptr && opt->get_expected_min() > 0) ++i;  // its value follows
      continue;
    }
    const std::vector<CLI::App*> commands = app.get_subcommands([](CLI::App*) { return true; });
    if (std::none_of(commands.begin(), commands.end(),
                     [&](const CLI::App* c) { return c->check_name(arg); })) {
      std::fprintf(stderr, "kvwctl: unknown command '%s' (kvwctl --help lists them)\n",
                   Printable(arg).c_str());
      return kUsage;
    }
    break;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help: the help text, exit 0
    // One line on stderr for every usage error.
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    std::fprintf(stderr, "kvwctl: %s (kvwctl --help)\n", Printable(what).c_str());
    return kUsage;
  }
  if (g.tls_cert.empty() != g.tls_key.empty()) {
    std::fprintf(stderr, "kvwctl: --tls-cert and --tls-key go together (mutual TLS needs both)\n");
    return kUsage;
  }
  if (!g.tls_cert.empty() && g.tls_ca.empty()) {
    std::fprintf(stderr,
                 "kvwctl: --tls-cert and --tls-key need --tls-ca (TLS is on only with --tls-ca)\n");
    return kUsage;
  }
  if (g.etcd_cert.empty() != g.etcd_key.empty() || (!g.etcd_cert.empty() && g.etcd_ca.empty())) {
    std::fprintf(stderr,
                 "kvwctl: --etcd-cert and --etcd-key go together, and need --etcd-ca (TLS to etcd "
                 "is on only with --etcd-ca)\n");
    return kUsage;
  }
  // gRPC's own log lines would break "one line on stderr"; its errors reach us as statuses.
  gpr_set_log_function([](gpr_log_func_args*) {});
  Cli cli(g);
  if (*health) return cli.Health();
  if (*pools) return cli.Pools();
  if (*tenants_set) {
    if (!token_sha256.empty()) edit.token_sha256 = token_sha256;
    if (*quota_bytes_opt) edit.quota_bytes = quota_bytes;
    if (*quota_pages_opt) edit.quota_pages = quota_pages;
    if (*weight_opt) edit.weight = weight;
    if (*max_sequences_opt) edit.max_sequences = max_sequences;
    if (*max_leases_opt) edit.max_worker_leases = max_worker_leases;
    if (*max_streams_opt) edit.max_open_streams = max_open_streams;
    return cli.TenantsSet(edit, token_file);
  }
  if (*tenants_rm) return cli.TenantsRemove(rm_name);
  if (*tenants) return g.cluster.empty() ? cli.Tenants() : cli.ClusterTenants();
  if (*workers) return cli.Workers();
  if (*transfers) return cli.Transfers();
  if (*attached) return cli.Attached();
  if (*seqs) return cli.Sequences(tenant, pool);
  if (*show) return cli.ShowSequence(id);
  if (*watch) return cli.WatchSequence(id, interval_ms, count);
  if (*migrate) return cli.Migrate(id, to_node, hold_ms);
  if (*drain) return cli.Drain(drain_pool, true);
  if (*undrain) return cli.Drain(drain_pool, false);
  if (*config) return cli.Config();
  if (*cluster) return cli.Cluster();
  if (*top) return cli.Top(interval_ms, count);
  if (*completion) {
    std::cout << BashCompletion(app);
    return kOk;
  }
  return kUsage;
}

}  // namespace
}  // namespace kvwarden::kvwctl

int main(int argc, char** argv) { return kvwarden::kvwctl::Main(argc, argv); }
