#pragma once

// The daemon's configuration: loaded from a protobuf text-format file (schema:
// proto/kvwarden/v1/config.proto), validated and defaulted in this one place.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cache_service/cluster/cluster_settings.h"
#include "cache_service/core/memory/kv_layout.h"
#include "cache_service/core/sequences/retention_policy.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "cache_service/core/tenancy/worker_leases.h"
#include "cache_service/util/log.h"

namespace kvwarden {

namespace v1 {
class TenantLimitsConfig;
}  // namespace v1

namespace v1 {
class DaemonConfig;
}  // namespace v1

struct PoolSpec {
  std::string name;
  std::string device;     // "cpu" or "cuda:N"
  int cuda_ordinal = -1;  // N for "cuda:N", -1 for cpu
  KvLayout layout;
  uint32_t chunk_pages = 0;
  uint32_t num_chunks = 0;
  uint32_t high_water_percent = 90;
  bool preallocate = false;
};

// gRPC TLS, as PEM text read from the config's files; off when cert_pem is empty.
struct TlsSettings {
  std::string cert_pem, key_pem, client_ca_pem;
  bool enabled() const { return !cert_pem.empty(); }
};

struct TenantAuth {
  std::string name;
  std::string token;
};

// A tenant's default retention policy, resolved for each pool's layout.
struct TenantDefaults {
  std::vector<RetentionPolicy> policy_by_pool;  // same order as DaemonSettings::pools
};

struct DaemonSettings {
  std::string listen;
  std::string admin_token;
  std::vector<PoolSpec> pools;
  std::vector<TenantSpec> tenants;              // ledger order = tenant ids
  std::vector<TenantAuth> tenant_tokens;        // same order
  std::vector<TenantDefaults> tenant_defaults;  // same order
  TenantLimits tenant_limits;  // the node's defaults (tenant_limits), for fleet-wide tenants
  LeaseOptions leases;
  absl::Duration reap_interval = absl::Milliseconds(100);
  bool ucx = true;
  std::string ucx_transports;
  std::string ucx_net_devices;  // "" = follow `listen` (see config.proto)
  std::string attach_socket;    // empty: attach off
  bool tcp_data = true;
  std::string tcp_data_listen;  // "" = the gRPC listen host, a free port
  uint32_t max_tcp_data_connections = 1024;
  uint32_t max_tcp_data_connections_per_tenant = 64;
  std::string metrics_listen;  // empty: no /metrics
  // The config as loaded, every token replaced by "<redacted>" (admin GetConfig).
  std::string redacted_config;
  std::string config_path;  // the file it came from
  TlsSettings tls;
  LogFormat log_format = LogFormat::kText;
  LogLevel log_level = LogLevel::kInfo;
  uint32_t max_attach_connections = 1024;
  uint32_t max_grpc_connections = 4096;
  uint32_t max_grpc_connections_per_peer = 1024;
  absl::Duration grpc_preface_timeout = absl::Seconds(5);
  absl::Duration grpc_idle_timeout = absl::Minutes(5);
  absl::Duration grpc_auth_timeout = absl::Seconds(30);
  bool stage_all_pools = false;
  bool memfd_chunks = false;
  ClusterSettings cluster;  // validated with the flags (ValidateClusterSettings)
};

inline constexpr uint64_t kDefaultChunkBytes = 64ull << 20;
inline constexpr const char* kDefaultListen = "127.0.0.1:50051";

// Every error is one line: "<path>: <field>: <reason>" (or "<path>:<line>:<col>: ..."
// for syntax errors), with code INVALID_ARGUMENT (NOT_FOUND for a missing file).
absl::StatusOr<DaemonSettings> LoadDaemonConfig(const std::string& path);
// A token file's content, surrounding whitespace dropped; INVALID_ARGUMENT naming the path
// and the reason when it cannot be read, holds nothing or holds the placeholder
// (token_file, --peer-token-file).
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);
// A token still the shipped placeholder ("change-me..."): refused inline in the config and
// by ReadTokenFile, so wherever a token is set.
bool IsPlaceholderToken(absl::string_view token);
// A tenant's limits: the fields set in `in` over `base`.
TenantLimits LimitsFrom(const v1::TenantLimitsConfig& in, TenantLimits base);
// Whether the node has tenants to serve once flags are merged: its config's, or the
// cluster's fleet-wide ones; INVALID_ARGUMENT otherwise.
absl::Status CheckTenantSources(const DaemonSettings& s);
absl::StatusOr<DaemonSettings> ParseDaemonConfig(const std::string& text,
                                                 const std::string& path_for_errors);

}  // namespace kvwarden
