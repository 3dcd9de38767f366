#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "cache_service/core/memory/pool_set.h"
#include "cache_service/core/sequences/parked_calls.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "cache_service/core/tenancy/authenticator.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "cache_service/core/tenancy/worker_leases.h"
#include "cache_service/daemon_config.h"

namespace kvwarden {

// Each tenant's default retention policy per pool (from the config). Immutable.
struct PolicyDefaults {
  std::vector<std::string> pools;       // pool names, config order
  std::vector<TenantDefaults> tenants;  // by tenant id

  // Null when none is configured (then the policy is full).
  const RetentionPolicy* Find(TenantId tenant, const std::string& pool) const {
    if (tenant >= tenants.size()) return nullptr;
    for (size_t i = 0; i < pools.size(); ++i) {
      if (pools[i] == pool) return &tenants[tenant].policy_by_pool[i];
    }
    return nullptr;
  }
};

class UcxDataPlane;
class Migrations;
class Handles;
class ClusterView;
class AttachServer;
struct GrpcConnectionStats;

// The data plane as the services see it. Both parts are optional (null when off).
struct DataPlaneParts {
  std::string instance_id;  // changes on every daemon start
  UcxDataPlane* ucx = nullptr;
  AttachServer* attach = nullptr;
  uint16_t tcp_data_port = 0;  // TcpDataServer's; 0 when off
};

// The parts the gRPC services talk to, wired in main. Not owned; all outlive the server.
struct ServiceContext {
  const PoolSet* pools = nullptr;
  TenantLedger* ledger = nullptr;
  SequenceTable* table = nullptr;
  WorkerLeases* leases = nullptr;
  const Authenticator* auth = nullptr;
  const PolicyDefaults* policy_defaults = nullptr;
  absl::Time started = absl::Now();
  const DataPlaneParts* data_plane = nullptr;
  ParkedCalls* parked = nullptr;  // required: calls waiting for a transfer lease
  const GrpcConnectionStats* grpc_connections = nullptr;  // required
  // The Prometheus endpoint's host:port once it serves (empty when off); may be null.
  const std::string* metrics_address = nullptr;
  // The running config, tokens redacted, and its path (GetConfig); may be null.
  const std::string* config_text = nullptr;
  const std::string* config_path = nullptr;
  // Sets gRPC health's overall status (SetPoolDraining); may be null or empty.
  const std::function<void(bool serving)>* set_serving = nullptr;
  // Cluster mode's migrations (MigrateSequence); null when the daemon is not in a cluster.
  Migrations* migrations = nullptr;
  Handles* handles = nullptr;                 // cluster mode's handles; null like migrations
  const ClusterView* cluster_view = nullptr;  // cluster mode's mirror of etcd; null like them
  std::string node = {};                      // this node's name in the cluster
};

}  // namespace kvwarden
