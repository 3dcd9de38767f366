#include "cache_service/daemon_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <tuple>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/retention/field_defaults.h"
#include "cache_service/retention/registry.h"
#include "common/cluster/cluster_keys.h"
#include "common/cluster/etcd_client.h"
#include "common/ucx/ucx.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "kvwarden/v1/config.pb.h"

namespace kvwarden {

TenantLimits LimitsFrom(const v1::TenantLimitsConfig& in, TenantLimits base) {
  if (in.max_sequences()) base.max_sequences = in.max_sequences();
  if (in.max_worker_leases()) base.max_worker_leases = in.max_worker_leases();
  if (in.max_open_streams()) base.max_open_streams = in.max_open_streams();
  if (in.max_transfers()) base.max_transfers = in.max_transfers();
  if (in.max_attach_connections()) base.max_attach_connections = in.max_attach_connections();
  return base;
}

absl::Status CheckTenantSources(const DaemonSettings& s) {
  if (!s.tenants.empty() || (s.cluster.enabled() && s.cluster.fleet_tenants)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      "tenants: at least one tenant is required (or cluster mode, whose fleet-wide tenants "
      "live in etcd)");
}

namespace {

constexpr char kPlaceholderRefusal[] =
    "is a 'change-me' placeholder (deploy/k8s/base/secret.yaml): set a real secret";

// Collects the first syntax error with its position.
class FirstErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (error.empty()) error = absl::StrFormat("%d:%d: %s", line + 1, column + 1, message);
  }
  void AddWarning(int, int, const std::string&) override {}
  std::string error;
};

// Validation error for `field`; the caller prefixes the file.
absl::Status FieldError(const std::string& field, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", reason));
}

absl::Status ValidateLayout(const v1::KvLayout& in, const std::string& f, KvLayout* out) {
  struct Dim {
    const char* name;
    uint32_t value;
    uint32_t max;
  };
  for (const Dim& d :
       {Dim{"num_layers", in.num_layers(), 1024}, Dim{"num_kv_heads", in.num_kv_heads(), 1024},
        Dim{"head_dim", in.head_dim(), 4096}, Dim{"page_tokens", in.page_tokens(), 4096}}) {
    if (d.value == 0 || d.value > d.max) {
      return FieldError(absl::StrCat(f, ".", d.name),
                        absl::StrFormat("must be in [1, %u], got %u", d.max, d.value));
    }
  }
  switch (in.dtype()) {
    case v1::DTYPE_FP16:
      out->dtype = DType::kFp16;
      break;
    case v1::DTYPE_BF16:
      out->dtype = DType::kBf16;
      break;
    case v1::DTYPE_FP32:
      out->dtype = DType::kFp32;
      break;
    default:
      return FieldError(f + ".dtype", "must be DTYPE_FP16, DTYPE_BF16 or DTYPE_FP32");
  }
  out->num_layers = in.num_layers();
  out->num_kv_heads = in.num_kv_heads();
  out->head_dim = in.head_dim();
  out->page_tokens = in.page_tokens();
  return absl::OkStatus();
}

absl::Status ValidatePool(const v1::PoolConfig& in, const std::string& f, PoolSpec* out) {
  if (!ValidName(in.name())) {
    return FieldError(f + ".name", "must be 1-64 characters of [A-Za-z0-9._-]");
  }
  out->name = in.name();
  out->device = in.device().empty() ? "cpu" : in.device();
  if (out->device != "cpu") {
    int ordinal = -1;
    if (!absl::StartsWith(out->device, "cuda:") ||
        !absl::SimpleAtoi(absl::string_view(out->device).substr(5), &ordinal) || ordinal < 0) {
      return FieldError(f + ".device",
                        absl::StrCat("'", out->device, "' is not 'cpu' or 'cuda:N'"));
    }
    out->cuda_ordinal = ordinal;
  }
  if (!in.has_layout()) return FieldError(f + ".layout", "is required");
  if (absl::Status s = ValidateLayout(in.layout(), f + ".layout", &out->layout); !s.ok()) return s;
  const uint64_t page_bytes = out->layout.page_bytes();
  const uint64_t chunk_bytes = in.chunk_bytes() == 0 ? kDefaultChunkBytes : in.chunk_bytes();
  if (chunk_bytes < page_bytes) {
    return FieldError(f + ".chunk_bytes", absl::StrFormat("%d is smaller than one page (%d bytes)",
                                                          chunk_bytes, page_bytes));
  }
  // cudaMalloc may carve small allocations out of one block, and a CUDA IPC handle opens
  // the whole block: a tenant attached to one chunk would map its neighbour's too.
  constexpr uint64_t kCudaChunkGranule = uint64_t{2} << 20;
  if (out->cuda_ordinal >= 0 && chunk_bytes % kCudaChunkGranule != 0) {
    return FieldError(f + ".chunk_bytes",
                      absl::StrFormat("%d: a cuda pool's chunks must be a multiple of 2 MiB (%d) "
                                      "so that no two share a CUDA allocation block",
                                      chunk_bytes, kCudaChunkGranule));
  }
  const uint64_t chunk_pages = chunk_bytes / page_bytes;
  if (chunk_pages > UINT32_MAX) return FieldError(f + ".chunk_bytes", "too large");
  if ((in.capacity_bytes() == 0) == (in.capacity_pages() == 0)) {
    return FieldError(f + ".capacity_bytes",
                      "set exactly one of capacity_bytes and capacity_pages");
  }
  const uint64_t pages =
      in.capacity_pages() != 0 ? in.capacity_pages() : in.capacity_bytes() / page_bytes;
  const uint64_t chunks = pages / chunk_pages;
  const std::string cap_field = in.capacity_pages() != 0 ? ".capacity_pages" : ".capacity_bytes";
  if (chunks == 0) {
    return FieldError(f + cap_field,
                      absl::StrFormat("%d pages is less than one chunk (%d pages of %d bytes)",
                                      pages, chunk_pages, page_bytes));
  }
  if (chunks * chunk_pages > UINT32_MAX) {
    return FieldError(f + cap_field, "more than 2^32 pages");
  }
  out->high_water_percent = in.high_water_percent() ? in.high_water_percent() : 90;
  out->preallocate = in.preallocate();
  if (out->high_water_percent > 100) {
    return FieldError(f + ".high_water_percent",
                      absl::StrFormat("%u is above 100", out->high_water_percent));
  }
  out->chunk_pages = static_cast<uint32_t>(chunk_pages);
  out->num_chunks = static_cast<uint32_t>(chunks);
  return absl::OkStatus();
}

absl::Status ValidateLeases(const v1::LeaseConfig& in, DaemonSettings* out) {
  const uint32_t def = in.default_ttl_ms() ? in.default_ttl_ms() : 10000;
  const uint32_t lo = in.min_ttl_ms() ? in.min_ttl_ms() : 100;
  const uint32_t hi = in.max_ttl_ms() ? in.max_ttl_ms() : 300000;
  if (lo > hi) return FieldError("leases.min_ttl_ms", "must not exceed max_ttl_ms");
  if (def < lo || def > hi) {
    return FieldError("leases.default_ttl_ms",
                      absl::StrFormat("%u is outside [min_ttl_ms %u, max_ttl_ms %u]", def, lo, hi));
  }
  out->leases.default_ttl = absl::Milliseconds(def);
  out->leases.min_ttl = absl::Milliseconds(lo);
  out->leases.max_ttl = absl::Milliseconds(hi);
  out->reap_interval = absl::Milliseconds(in.reap_interval_ms() ? in.reap_interval_ms() : 100);
  return absl::OkStatus();
}

// The whole file, or why it cannot be read (the status message is the reason, e.g.
// "Permission denied"): an operator fixing an install needs it, not just the path.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(std::strerror(errno));
  std::string out;
  struct stat st;
  int err = fstat(fd, &st) != 0 ? errno : (S_ISDIR(st.st_mode) ? EISDIR : 0);
  char chunk[16384];
  while (err == 0) {
    const ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = errno;
    if (n <= 0) break;
    out.append(chunk, static_cast<size_t>(n));
  }
  close(fd);
  if (err != 0) return absl::FailedPreconditionError(std::strerror(err));
  return out;
}

// A file the config names: absolute, or relative to the config's directory.
std::string ConfigRelative(const std::string& file, const std::string& config_dir) {
  return file[0] == '/' || config_dir.empty() ? file : absl::StrCat(config_dir, "/", file);
}

// A token given inline or in a file (one of the two); a file's path is relative to the
// config's directory, its content trimmed.
absl::Status ResolveToken(const std::string& inline_token, const std::string& file,
                          const std::string& config_dir, const std::string& field,
                          std::string* out) {
  if (file.empty()) {
    *out = inline_token;
  } else {
    if (!inline_token.empty())
      return FieldError(field + "_file",
                        absl::StrCat("set ", field, " or ", field, "_file, not both"));
    absl::StatusOr<std::string> token = ReadTokenFile(ConfigRelative(file, config_dir));
    if (!token.ok()) return FieldError(field + "_file", std::string(token.status().message()));
    *out = *std::move(token);
  }
  // A file's token was checked by ReadTokenFile.
  if (file.empty() && IsPlaceholderToken(*out)) return FieldError(field, kPlaceholderRefusal);
  return absl::OkStatus();
}

// A PEM file of the TLS config: readable and PEM.
absl::Status ReadPem(const std::string& file, const std::string& config_dir,
                     const std::string& field, std::string* out) {
  if (file.empty()) return absl::OkStatus();
  const std::string path = ConfigRelative(file, config_dir);
  const absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok())
    return FieldError(field, absl::StrCat(path, ": cannot read: ", text.status().message()));
  *out = *text;
  if (out->find("-----BEGIN ") == std::string::npos)
    return FieldError(field, absl::StrCat(path, " is not PEM"));
  return absl::OkStatus();
}

absl::Status ReadTls(const v1::TlsConfig& in, const std::string& config_dir, TlsSettings* out) {
  if (in.cert_file().empty() != in.key_file().empty()) {
    return FieldError(in.cert_file().empty() ? "tls.cert_file" : "tls.key_file",
                      "is required with the other (TLS needs a certificate and its key)");
  }
  if (in.cert_file().empty() && !in.client_ca_file().empty()) {
    return FieldError("tls.client_ca_file", "needs tls.cert_file and tls.key_file");
  }
  for (auto [file, field, dst] :
       {std::tuple{&in.cert_file(), "tls.cert_file", &out->cert_pem},
        std::tuple{&in.key_file(), "tls.key_file", &out->key_pem},
        std::tuple{&in.client_ca_file(), "tls.client_ca_file", &out->client_ca_pem}}) {
    if (absl::Status s = ReadPem(*file, config_dir, field, dst); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ReadEtcdTls(const v1::EtcdTlsConfig& in, const std::string& config_dir,
                         EtcdClient::Tls* out) {
  if (in.cert_file().empty() != in.key_file().empty()) {
    return FieldError(
        in.cert_file().empty() ? "cluster.etcd_tls.cert_file" : "cluster.etcd_tls.key_file",
        "is required with the other (a client certificate needs its key)");
  }
  if (in.ca_file().empty() && (!in.cert_file().empty() || !in.server_name().empty())) {
    return FieldError("cluster.etcd_tls.ca_file", "is required for TLS to etcd");
  }
  for (auto [file, field, dst] :
       {std::tuple{&in.ca_file(), "cluster.etcd_tls.ca_file", &out->ca_pem},
        std::tuple{&in.cert_file(), "cluster.etcd_tls.cert_file", &out->cert_pem},
        std::tuple{&in.key_file(), "cluster.etcd_tls.key_file", &out->key_pem}}) {
    if (absl::Status s = ReadPem(*file, config_dir, field, dst); !s.ok()) return s;
  }
  out->server_name = in.server_name();
  return absl::OkStatus();
}

absl::Status ResolveTokenFiles(v1::DaemonConfig* cfg, const std::string& config_dir) {
  std::string token;
  if (absl::Status s = ResolveToken(cfg->admin_token(), cfg->admin_token_file(), config_dir,
                                    "admin_token", &token);
      !s.ok()) {
    return s;
  }
  cfg->set_admin_token(token);
  for (int i = 0; i < cfg->tenants_size(); ++i) {
    v1::TenantConfig* t = cfg->mutable_tenants(i);
    if (absl::Status s = ResolveToken(t->token(), t->token_file(), config_dir,
                                      absl::StrCat("tenants[", i, "].token"), &token);
        !s.ok()) {
      return s;
    }
    t->set_token(token);
  }
  v1::ClusterConfig* cluster = cfg->mutable_cluster();
  if (!cluster->peer_token().empty() || !cluster->peer_token_file().empty()) {
    if (absl::Status s = ResolveToken(cluster->peer_token(), cluster->peer_token_file(), config_dir,
                                      "cluster.peer_token", &token);
        !s.ok()) {
      return s;
    }
    cluster->set_peer_token(token);
  }
  return absl::OkStatus();
}

absl::Status Validate(const v1::DaemonConfig& in, DaemonSettings* out) {
  out->listen = in.listen().empty() ? kDefaultListen : in.listen();
  if (out->listen.rfind(':') == std::string::npos) {
    return FieldError("listen", absl::StrCat("'", out->listen, "' is not HOST:PORT"));
  }
  if (in.admin_token().empty()) return FieldError("admin_token", "is required");
  out->admin_token = in.admin_token();
  if (in.pools().empty()) return FieldError("pools", "at least one pool is required");
  absl::flat_hash_set<std::string> names;
  for (int i = 0; i < in.pools_size(); ++i) {
    const std::string f = absl::StrCat("pools[", i, "]");
    PoolSpec spec;
    if (absl::Status s = ValidatePool(in.pools(i), f, &spec); !s.ok()) return s;
    if (!names.insert(spec.name).second) {
      return FieldError(f + ".name", absl::StrCat("duplicate pool name '", spec.name, "'"));
    }
    out->pools.push_back(std::move(spec));
  }
  // No tenant at all is allowed here for cluster mode's fleet-wide tenants; once the
  // flags are merged, CheckTenantSources refuses a node with none.
  names.clear();
  out->tenant_limits = LimitsFrom(in.tenant_limits(), TenantLimits());
  absl::flat_hash_set<std::string> tokens = {in.admin_token()};
  for (int i = 0; i < in.tenants_size(); ++i) {
    const v1::TenantConfig& t = in.tenants(i);
    const std::string f = absl::StrCat("tenants[", i, "]");
    if (!ValidName(t.name())) {
      return FieldError(f + ".name", "must be 1-64 characters of [A-Za-z0-9._-]");
    }
    if (!names.insert(t.name()).second) {
      return FieldError(f + ".name", absl::StrCat("duplicate tenant name '", t.name(), "'"));
    }
    if (t.token().empty()) return FieldError(f + ".token", "is required");
    if (!tokens.insert(t.token()).second) {
      return FieldError(f + ".token", "must differ from every other token and the admin token");
    }
    if (t.quota_bytes() == 0 && t.quota_pages() == 0) {
      return FieldError(f + ".quota_bytes", "set quota_bytes or quota_pages (quotas are hard)");
    }
    out->tenants.push_back(
        TenantSpec{t.name(), t.quota_bytes(), t.quota_pages(), t.weight() ? t.weight() : 1,
                   LimitsFrom(t.limits(), LimitsFrom(in.tenant_limits(), TenantLimits()))});
    out->tenant_tokens.push_back(TenantAuth{t.name(), t.token()});
    TenantDefaults defaults;
    for (const PoolSpec& pool : out->pools) {
      absl::StatusOr<RetentionPolicy> policy =
          PolicyFromProto(t.default_policy(), pool.layout, f + ".default_policy");
      if (!policy.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(policy.status().message(), " (for pool '", pool.name, "')"));
      }
      defaults.policy_by_pool.push_back(*std::move(policy));
    }
    out->tenant_defaults.push_back(std::move(defaults));
  }
  out->ucx = !in.data_plane().disable_ucx();
  out->ucx_transports = in.data_plane().ucx_transports();
  if (absl::StatusOr<std::string> tls = ucx::BoundedTransports(out->ucx_transports); tls.ok()) {
    out->ucx_transports = *tls;
  } else {
    return FieldError("data_plane.ucx_transports", std::string(tls.status().message()));
  }
  out->tcp_data = !in.data_plane().disable_tcp();
  out->tcp_data_listen = in.data_plane().tcp_listen();
  if (!out->tcp_data_listen.empty() && out->tcp_data_listen.rfind(':') == std::string::npos) {
    return FieldError("data_plane.tcp_listen",
                      absl::StrCat("'", out->tcp_data_listen, "' is not HOST:PORT"));
  }
  if (in.data_plane().max_tcp_connections()) {
    out->max_tcp_data_connections = in.data_plane().max_tcp_connections();
  }
  if (in.data_plane().max_tcp_connections_per_tenant()) {
    out->max_tcp_data_connections_per_tenant = in.data_plane().max_tcp_connections_per_tenant();
  }
  out->ucx_net_devices = in.data_plane().ucx_net_devices();
  out->attach_socket = in.data_plane().attach_socket();
  out->metrics_listen = in.metrics().listen();
  if (!in.log().format().empty() && !ParseLogFormat(in.log().format(), &out->log_format)) {
    return FieldError("log.format", absl::StrCat("'", in.log().format(), "' is not text or json"));
  }
  if (!in.log().level().empty() && !ParseLogLevel(in.log().level(), &out->log_level)) {
    return FieldError(
        "log.level", absl::StrCat("'", in.log().level(), "' is not debug, info, warning or error"));
  }
  if (!out->metrics_listen.empty() && out->metrics_listen.rfind(':') == std::string::npos) {
    return FieldError("metrics.listen",
                      absl::StrCat("'", out->metrics_listen, "' is not HOST:PORT"));
  }
  if (in.data_plane().max_attach_connections()) {
    out->max_attach_connections = in.data_plane().max_attach_connections();
  }
  const v1::GrpcConnectionsConfig& conns = in.grpc_connections();
  if (conns.max_connections()) out->max_grpc_connections = conns.max_connections();
  if (conns.max_connections_per_peer())
    out->max_grpc_connections_per_peer = conns.max_connections_per_peer();
  if (conns.preface_timeout_ms()) {
    if (conns.preface_timeout_ms() > 600000) {
      return FieldError("grpc_connections.preface_timeout_ms", "at most 600000 (10 minutes)");
    }
    out->grpc_preface_timeout = absl::Milliseconds(conns.preface_timeout_ms());
  }
  if (conns.idle_timeout_ms()) {
    if (conns.idle_timeout_ms() < 1000) {
      return FieldError("grpc_connections.idle_timeout_ms", "at least 1000 (1 second)");
    }
    out->grpc_idle_timeout = absl::Milliseconds(conns.idle_timeout_ms());
  }
  if (conns.auth_timeout_ms()) {
    if (conns.auth_timeout_ms() < 1000) {
      return FieldError("grpc_connections.auth_timeout_ms", "at least 1000 (1 second)");
    }
    out->grpc_auth_timeout = absl::Milliseconds(conns.auth_timeout_ms());
  }
  out->stage_all_pools = in.data_plane().stage_all_pools();
  out->memfd_chunks = in.data_plane().memfd_chunks();
  const v1::ClusterConfig& cluster = in.cluster();
  for (int i = 0; i < cluster.endpoints_size(); ++i) {
    absl::StatusOr<std::vector<std::string>> e = ParseEtcdEndpoints(cluster.endpoints(i));
    if (!e.ok() || e->size() != 1) {
      return FieldError(absl::StrCat("cluster.endpoints[", i, "]"),
                        absl::StrCat("'", cluster.endpoints(i), "' is not HOST:PORT"));
    }
    out->cluster.endpoints.push_back((*e)[0]);
  }
  out->cluster.node = cluster.node();
  const uint32_t ttl_s = UintOrDefault(cluster, "lease_ttl_s");
  if (ttl_s < 2 || ttl_s > 300) {
    return FieldError("cluster.lease_ttl_s", absl::StrCat(ttl_s, " is outside [2, 300]"));
  }
  out->cluster.lease_ttl = absl::Seconds(ttl_s);
  out->cluster.advertise = cluster.advertise();
  if (!cluster.key_prefix().empty()) out->cluster.key_prefix = cluster.key_prefix();
  out->cluster.peer_token = cluster.peer_token();
  out->cluster.fleet_tenants = !cluster.local_tenants_only();
  if (out->attach_socket.size() > 107) {
    return FieldError("data_plane.attach_socket",
                      "longer than a Unix socket path may be (107 bytes)");
  }
  return ValidateLeases(in.leases(), out);
}

}  // namespace

absl::StatusOr<DaemonSettings> ParseDaemonConfig(const std::string& text,
                                                 const std::string& path_for_errors) {
  v1::DaemonConfig proto;
  google::protobuf::TextFormat::Parser parser;
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &proto)) {
    return absl::InvalidArgumentError(absl::StrCat(path_for_errors, ":", errors.error));
  }
  v1::DaemonConfig redacted = proto;  // before token files are read: their paths stay
  if (!redacted.admin_token().empty()) redacted.set_admin_token("<redacted>");
  for (v1::TenantConfig& t : *redacted.mutable_tenants()) {
    if (!t.token().empty()) t.set_token("<redacted>");
  }
  if (!redacted.cluster().peer_token().empty())
    redacted.mutable_cluster()->set_peer_token("<redacted>");
  const size_t slash = path_for_errors.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path_for_errors.substr(0, slash);
  if (absl::Status s = ResolveTokenFiles(&proto, dir); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path_for_errors, ": ", s.message()));
  }
  DaemonSettings settings;
  if (absl::Status s = Validate(proto, &settings); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path_for_errors, ": ", s.message()));
  }
  google::protobuf::TextFormat::PrintToString(redacted, &settings.redacted_config);
  settings.config_path = path_for_errors;
  if (absl::Status s = ReadTls(proto.tls(), dir, &settings.tls); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path_for_errors, ": ", s.message()));
  }
  if (absl::Status s = ReadEtcdTls(proto.cluster().etcd_tls(), dir, &settings.cluster.etcd_tls);
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path_for_errors, ": ", s.message()));
  }
  return settings;
}

bool IsPlaceholderToken(absl::string_view token) {
  return absl::StartsWithIgnoreCase(token, "change-me");
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  const absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok())
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot read: ", text.status().message()));
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " is empty"));
  if (IsPlaceholderToken(token)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " ", kPlaceholderRefusal));
  }
  return token;
}

absl::StatusOr<DaemonSettings> LoadDaemonConfig(const std::string& path) {
  const absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat(path, ": cannot open config file: ", text.status().message()));
  }
  return ParseDaemonConfig(*text, path);
}

}  // namespace kvwarden
