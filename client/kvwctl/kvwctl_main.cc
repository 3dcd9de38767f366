// kvwctl: kvwarden's admin CLI. Human tables by default, --json for scripts.
//
// Exit codes: 0 success; 1 the daemon refused the request (its gRPC status code and
// message are printed on one line); 2 bad usage; 3 the daemon cannot be reached.

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/kvwctl/table.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "kvwarden/v1/admin.grpc.pb.h"
#include "kvwarden/v1/control.grpc.pb.h"

namespace kvwarden::kvwctl {
namespace {

enum ExitCode { kOk = 0, kRefused = 1, kUsage = 2, kUnreachable = 3 };

struct Globals {
  std::string target = "127.0.0.1:50051";
  std::string token;
  bool json = false;
  int timeout_ms = 5000;
};

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
    case v1::DTYPE_FP16: return "fp16";
    case v1::DTYPE_BF16: return "bf16";
    case v1::DTYPE_FP32: return "fp32";
    default: return "?";
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
    channel_ = grpc::CreateChannel(g.target, grpc::InsecureChannelCredentials());
    admin_ = v1::AdminService::NewStub(channel_);
    control_ = v1::ControlService::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
  }

  int Health() {
    grpc::ClientContext hctx;
    Prepare(hctx);
    grpc::health::v1::HealthCheckRequest hreq;
    grpc::health::v1::HealthCheckResponse hresp;
    const absl::Time t0 = absl::Now();
    grpc::Status s = health_->Check(&hctx, hreq, &hresp);
    const absl::Duration rtt = absl::Now() - t0;
    if (!s.ok()) return Fail(s);
    grpc::ClientContext pctx;
    Prepare(pctx);
    v1::PingResponse ping;
    s = control_->Ping(&pctx, v1::PingRequest(), &ping);
    if (!s.ok()) return Fail(s);
    const std::string status = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(hresp.status());
    if (g_.json) {
      std::cout << absl::StrFormat(
          "{\n  \"status\": \"%s\",\n  \"version\": \"%s\",\n  \"uptime_ms\": %d,\n  \"rtt_us\": %d\n}\n",
          status, ping.version(), ping.uptime_ms(), absl::ToInt64Microseconds(rtt));
    } else {
      std::cout << absl::StrFormat("%s  %s  kvwardend %s  up %.1fs  rtt %.2f ms\n", status,
                                   g_.target, ping.version(), ping.uptime_ms() / 1000.0,
                                   absl::ToDoubleMilliseconds(rtt));
    }
    return hresp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kOk : kRefused;
  }

  int Pools() {
    grpc::ClientContext ctx;
    Prepare(ctx);
    v1::ListPoolsResponse resp;
    grpc::Status s = admin_->ListPools(&ctx, v1::ListPoolsRequest(), &resp);
    if (!s.ok()) return Fail(s);
    if (g_.json) return PrintJson(resp);
    Table t({"POOL", "DEVICE", "LAYOUT", "PAGE", "CAPACITY", "USED", "FREE", "SHARED", "PINNED",
             "CHUNKS(owned/total)"});
    Table by_tenant({"POOL", "TENANT", "CHUNKS", "PAGES", "BYTES"});
    for (const v1::PoolStats& p : resp.pools()) {
      t.Add({p.name(), p.device(), LayoutText(p.layout()), Bytes(p.page_bytes()),
             absl::StrCat(p.capacity_pages(), " (", Bytes(p.capacity_pages() * p.page_bytes()), ")"),
             absl::StrCat(p.used_pages(), " (", Pct(p.used_pages(), p.capacity_pages()), ")"),
             absl::StrCat(p.free_pages()), absl::StrCat(p.shared_pages()),
             absl::StrCat(p.pinned_pages()),
             absl::StrCat(p.chunks_total() - p.chunks_unowned(), "/", p.chunks_total())});
      for (const v1::PoolTenantUsage& u : p.tenants()) {
        by_tenant.Add({p.name(), u.tenant(), absl::StrCat(u.chunks()), absl::StrCat(u.pages()),
                       Bytes(u.pages() * p.page_bytes())});
      }
    }
    std::cout << t.Render() << "\n" << by_tenant.Render() << "\n"
              << "kvwardend: " << resp.open_fds() << " fds open of " << resp.fd_limit() << "; "
              << resp.grpc_connections() << " gRPC connections of " << resp.grpc_connection_limit()
              << " (" << resp.grpc_connections_refused() << " refused since start)\n";
    return kOk;
  }

  int Tenants() {
    grpc::ClientContext ctx;
    Prepare(ctx);
    v1::ListTenantsResponse resp;
    grpc::Status s = admin_->ListTenants(&ctx, v1::ListTenantsRequest(), &resp);
    if (!s.ok()) return Fail(s);
    if (g_.json) return PrintJson(resp);
    Table t({"TENANT", "WEIGHT", "QUOTA", "USED", "USED%", "PAGES", "PEAK_PAGES", "SEQS",
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
      t.Add({x.name(), absl::StrCat(x.weight()), quota, Bytes(x.used_bytes()), pct,
             absl::StrCat(x.used_pages()), absl::StrCat(x.peak_pages()),
             absl::StrCat(x.sequences()), absl::StrCat(x.workers()), absl::StrCat(x.open_streams()),
             absl::StrCat(x.quota_refusals()), absl::StrCat(x.limit_refusals())});
    }
    std::cout << t.Render();
    return kOk;
  }

  int Workers() {
    grpc::ClientContext ctx;
    Prepare(ctx);
    v1::ListWorkersResponse resp;
    grpc::Status s = admin_->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp);
    if (!s.ok()) return Fail(s);
    if (g_.json) return PrintJson(resp);
    Table t({"LEASE", "TENANT", "NAME", "ROLE", "TTL", "EXPIRES_IN", "SEQS"});
    for (const v1::WorkerInfo& w : resp.workers()) {
      t.Add({absl::StrCat(w.lease_id()), w.tenant(), w.name(), v1::WorkerRole_Name(w.role()),
             absl::StrCat(w.ttl_ms(), "ms"), absl::StrCat(w.expires_in_ms(), "ms"),
             absl::StrCat(w.sequences())});
    }
    std::cout << t.Render();
    return kOk;
  }

  int Transfers() {
    grpc::ClientContext ctx;
    Prepare(ctx);
    v1::ListTransfersResponse resp;
    grpc::Status s = admin_->ListTransfers(&ctx, v1::ListTransfersRequest(), &resp);
    if (!s.ok()) return Fail(s);
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
    grpc::ClientContext ctx;
    Prepare(ctx);
    v1::ListAttachmentsResponse resp;
    grpc::Status s = admin_->ListAttachments(&ctx, v1::ListAttachmentsRequest(), &resp);
    if (!s.ok()) return Fail(s);
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
    // Page by page: one answer would exceed gRPC's message limit past ~50k sequences.
    for (bool first = true; first || !req.page_token().empty(); first = false) {
      grpc::ClientContext page_ctx;
      Prepare(page_ctx);
      v1::ListSequencesResponse page;
      grpc::Status s = admin_->ListSequences(&page_ctx, req, &page);
      if (!s.ok()) return Fail(s);
      for (v1::SequenceInfo& q : *page.mutable_sequences()) *resp.add_sequences() = std::move(q);
      req.set_page_token(page.next_page_token());
    }
    if (g_.json) return PrintJson(resp);
    Table t({"ID", "TENANT", "POOL", "LEASE", "TOKENS", "MAX", "PAGES", "SHARED", "EPOCH",
             "POLICY", "PARENT"});
    for (const v1::SequenceInfo& q : resp.sequences()) {
      t.Add({absl::StrCat(q.sequence_id()), q.tenant(), q.pool(), absl::StrCat(q.lease_id()),
             absl::StrCat(q.num_tokens()), absl::StrCat(q.max_tokens()),
             absl::StrCat(q.pages_held()), absl::StrCat(q.shared_pages()),
             absl::StrCat(q.epoch()), q.policy(),
             q.parent_sequence_id() ? absl::StrCat(q.parent_sequence_id()) : "-"});
    }
    std::cout << t.Render();
    return kOk;
  }

  // Redraws `seq show` every interval until the sequence is gone or the user stops it.
  int WatchSequence(uint64_t id, int interval_ms, int count) {
    for (int i = 0; count == 0 || i < count; ++i) {
      if (i > 0) absl::SleepFor(absl::Milliseconds(interval_ms));
      if (!g_.json) std::cout << "\033[H\033[2J" << absl::FormatTime("%H:%M:%S", absl::Now(), absl::LocalTimeZone()) << "  every " << interval_ms << " ms\n";
      if (int rc = ShowSequence(id); rc != kOk) return rc;
      std::cout.flush();
    }
    return kOk;
  }

  int ShowSequence(uint64_t id) {
    grpc::ClientContext ctx;
    Prepare(ctx);
    v1::DescribeSequenceRequest req;
    req.set_sequence_id(id);
    v1::SequenceInfo q;
    grpc::Status s = control_->DescribeSequence(&ctx, req, &q);
    if (!s.ok()) return Fail(s);
    if (g_.json) return PrintJson(q);
    const v1::KvLayout& l = q.layout();
    std::cout << absl::StrFormat(
        "sequence %d  tenant %s  pool %s  lease %d  policy %s\n"
        "layout     %u layers x %u kv heads x %u dim %s, %u tokens/page\n"
        "tokens     %u of max %u   epoch %d   pages %u (%u shared)%s\n"
        "policy     %s   decode steps %d\n%s\n",
        q.sequence_id(), q.tenant(), q.pool(), q.lease_id(), q.policy(), l.num_layers(),
        l.num_kv_heads(), l.head_dim(), DTypeName(l.dtype()), l.page_tokens(), q.num_tokens(),
        q.max_tokens(), q.epoch(), q.pages_held(), q.shared_pages(),
        q.parent_sequence_id() ? absl::StrCat("   forked from ", q.parent_sequence_id()) : "",
        q.policy_summary(), q.decode_steps(),
        q.budget_note().empty() ? "" : absl::StrCat("pressure   ", q.budget_note(), "\n"));
    // One row per layer; per head "live/budget", then "-evicted" once retention ran and
    // "low max/mean" for scissorhands.
    std::vector<std::string> header = {"LAYER", "PAGES"};
    for (uint32_t h = 0; h < l.num_kv_heads(); ++h) header.push_back(absl::StrCat("H", h, " live/budget"));
    Table t(std::move(header));
    for (const v1::LayerInfo& layer : q.layers()) {
      std::vector<std::string> row = {absl::StrCat(layer.layer()), absl::StrCat(layer.num_pages())};
      for (const v1::HeadInfo& h : layer.heads()) {
        std::string cell = absl::StrCat(h.live_slots(), "/", h.budget());
        if (h.evicted() > 0) absl::StrAppend(&cell, " -", h.evicted());
        if (q.policy() == "scissorhands") {
          absl::StrAppend(&cell, absl::StrFormat(" low %u/%.1f", h.low_count_max(), h.low_count_mean()));
        }
        row.push_back(std::move(cell));
      }
      t.Add(std::move(row));
    }
    std::cout << t.Render();
    return kOk;
  }

 private:
  void Prepare(grpc::ClientContext& ctx) const {
    if (!g_.token.empty()) ctx.AddMetadata("authorization", absl::StrCat("Bearer ", g_.token));
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(g_.timeout_ms)));
  }

  int Fail(const grpc::Status& s) const {
    const bool unreachable = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                             s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    std::string code = absl::StrCat(s.error_code());
    static constexpr const char* kNames[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED"};
    if (s.error_code() >= 0 && s.error_code() <= 16) code = kNames[s.error_code()];
    std::string msg = s.error_message();
    for (char& c : msg) {
      if (c == '\n') c = ' ';
    }
    std::fprintf(stderr, "kvwctl: %s%s: %s\n", unreachable ? "cannot reach daemon: " : "",
                 code.c_str(), msg.c_str());
    return unreachable ? kUnreachable : kRefused;
  }

  template <typename Message>
  int PrintJson(const Message& m) const {
    google::protobuf::util::JsonPrintOptions opts;
    opts.add_whitespace = true;
    opts.always_print_primitive_fields = true;
    opts.preserve_proto_field_names = true;
    std::string out;
    if (!google::protobuf::util::MessageToJsonString(m, &out, opts).ok()) return kRefused;
    std::cout << out;
    return kOk;
  }

  const Globals g_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<v1::ControlService::Stub> control_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

int Main(int argc, char** argv) {
  Globals g;
  if (const char* t = std::getenv("KVWARDEN_TARGET")) g.target = t;
  if (const char* t = std::getenv("KVWARDEN_ADMIN_TOKEN")) g.token = t;
  CLI::App app{"kvwctl: admin CLI for kvwardend"};
  app.require_subcommand(1);
  app.add_option("--target", g.target, "Daemon HOST:PORT (env KVWARDEN_TARGET)")->capture_default_str();
  app.add_option("--token", g.token, "Admin token (env KVWARDEN_ADMIN_TOKEN)");
  app.add_flag("--json", g.json, "Print JSON instead of tables");
  app.add_option("--timeout-ms", g.timeout_ms, "Per-call deadline")->capture_default_str()->check(CLI::PositiveNumber);
  app.footer(
      "Exit codes: 0 ok; 1 the daemon refused (status and message on stderr); 2 bad usage; "
      "3 daemon unreachable.");

  auto* health = app.add_subcommand("health", "Health check, version and uptime (no token needed)");
  auto* pools = app.add_subcommand("pools", "Pools: capacity, usage, chunks per tenant");
  auto* tenants = app.add_subcommand("tenants", "Tenants: quota, usage, sequences, refusals");
  auto* workers = app.add_subcommand("workers", "Registered workers and their leases (alias: leases)");
  workers->alias("leases");
  auto* transfers = app.add_subcommand("transfers", "Active transfer leases and the pages they pin");
  auto* attached = app.add_subcommand("attached", "Clients attached over the attach socket");
  std::string tenant, pool;
  auto* seqs = app.add_subcommand("seqs", "List sequences");
  seqs->add_option("--tenant", tenant, "Only this tenant's sequences");
  seqs->add_option("--pool", pool, "Only sequences in this pool");
  auto* seq = app.add_subcommand("seq", "One sequence");
  seq->require_subcommand(1);
  uint64_t id = 0;
  auto* show = seq->add_subcommand("show", "Layout, pages, epoch, per-layer/per-head live slots and budget");
  show->add_option("ID", id, "Sequence id")->required();
  auto* watch = seq->add_subcommand("watch", "Redraw `seq show` live");
  int interval_ms = 1000, count = 0;
  watch->add_option("ID", id, "Sequence id")->required();
  watch->add_option("--interval-ms", interval_ms, "Refresh period")->capture_default_str()->check(CLI::PositiveNumber);
  watch->add_option("--count", count, "Stop after this many refreshes (0 = until interrupted)");
  for (auto* sub : {health, pools, tenants, workers, transfers, attached, seqs, seq, show, watch}) {
    sub->fallthrough();
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }
  Cli cli(g);
  if (*health) return cli.Health();
  if (*pools) return cli.Pools();
  if (*tenants) return cli.Tenants();
  if (*workers) return cli.Workers();
  if (*transfers) return cli.Transfers();
  if (*attached) return cli.Attached();
  if (*seqs) return cli.Sequences(tenant, pool);
  if (*show) return cli.ShowSequence(id);
  if (*watch) return cli.WatchSequence(id, interval_ms, count);
  return kUsage;
}

}  // namespace
}  // namespace kvwarden::kvwctl

int main(int argc, char** argv) { return kvwarden::kvwctl::Main(argc, argv); }
