#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "cache_service/cluster/cluster_view.h"
#include "cache_service/cluster/handles.h"
#include "cache_service/cluster/migrations.h"
#include "cache_service/cluster/node_registration.h"
#include "cache_service/cluster/tenant_directory.h"
#include "cache_service/core/memory/pool_set.h"
#include "cache_service/core/sequences/parked_calls.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "cache_service/core/tenancy/authenticator.h"
#include "cache_service/core/tenancy/lease_reaper.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "cache_service/core/tenancy/worker_leases.h"
#include "cache_service/daemon_config.h"
#include "cache_service/dataplane/attach_server.h"
#include "cache_service/dataplane/tcp_data_server.h"
#include "cache_service/dataplane/ucx_data_plane.h"
#include "cache_service/metrics/daemon_metrics.h"
#include "cache_service/metrics/metrics_server.h"
#include "cache_service/rpc/admin_service.h"
#include "cache_service/rpc/control_service.h"
#include "cache_service/rpc/grpc_acceptor.h"
#include "cache_service/rpc/peer_service.h"
#include "cache_service/rpc/service_context.h"
#include "cache_service/rpc/transfer_service.h"
#include "common/cluster/etcd_client.h"
#include "grpcpp/server_builder.h"

namespace kvwarden {

// Every part of a kvwardend, wired from its settings: pools, tenant ledger, worker
// leases, sequence table, parked calls, lease reaper, UCX data plane and attach socket
// (when configured), and the gRPC services. No listening port: main adds one, the RPC
// fuzzer uses the server's in-process channel. Members are declared (and destroyed, in
// reverse) in dependency order.
class Daemon {
 public:
  // Errors name the part (e.g. "pool 'main': cuda:0 is not visible"); INVALID_ARGUMENT
  // for a setting that cannot work here, anything else for a start failure.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const DaemonSettings& settings);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Registers the services, their interceptors and per-connection bounds.
  void AddTo(grpc::ServerBuilder& builder);
  // Binds the gRPC address with kvwardend's own accept loop (grpc_acceptor.h), its
  // connection cap fitted under `fd_limit` with room for every chunk, the attach
  // connections and a reserve. Serve() the returned acceptor once the server is built;
  // destroy it before the server shuts down.
  absl::StatusOr<std::unique_ptr<GrpcAcceptor>> ListenGrpc(const std::string& address,
                                                           uint64_t fd_limit);
  // Ends every parked call now (UNAVAILABLE) and parks none after: call before the
  // server shuts down, so shutdown never waits on a transfer lease.
  void StopParkedCalls() { parked_.Shutdown(); }

  // Cluster mode (settings.cluster enabled): publishes this node, reachable at
  // `grpc_address` (the bound address), in etcd and keeps it there (node_registration.h).
  // etcd being down does not fail it: the node registers once etcd answers.
  absl::Status JoinCluster(const std::string& grpc_address);
  // Removes the node's entry now (a clean stop): clients stop picking it before it goes.
  void LeaveCluster() { registration_.reset(); }
  // Answers every migration call now (a running one is cut short, its sequence stays):
  // call before the server shuts down, which waits for every call's answer.
  void StopMigrations() {
    if (migrations_ != nullptr) migrations_->Stop();
  }

  SequenceTable& table() { return *table_; }
  // With TLS configured, where the acceptor hands connections (made by AddTo); else null.
  grpc::experimental::ExternalConnectionAcceptor* tls_acceptor() const {
    return tls_acceptor_.get();
  }
  // Called when draining changes gRPC health's overall status (set once the server runs).
  void SetServingHook(std::function<void(bool serving)> hook) { set_serving_ = std::move(hook); }
  // host:port of /metrics, empty when off.
  const std::string& metrics_address() const { return metrics_address_; }
  TenantLedger& ledger() { return *ledger_; }
  const PoolSet& pools() const { return pools_; }

 private:
  Daemon() = default;

  // Cluster mode's view of sequence ends and of the node's etcd lease. It outlives the
  // table and the registration that call it (declared before both) and forwards to the
  // handles only while they exist (the destructor detaches them first).
  struct ClusterHooks {
    absl::Mutex mu;
    Handles* handles ABSL_GUARDED_BY(mu) = nullptr;
    std::atomic<int64_t> node_lease{0};
    void SequenceEnded(SequenceId id, SequenceEnd why) {
      absl::MutexLock lock(&mu);
      if (handles != nullptr) handles->SequenceEnded(id, why == SequenceEnd::kMigrated);
    }
  };

  ClusterHooks hooks_;
  DataPlaneParts data_plane_;
  std::unique_ptr<UcxDataPlane> ucx_;
  std::unique_ptr<TenantLedger> ledger_;
  PoolSet pools_;
  std::unique_ptr<WorkerLeases> leases_;
  ParkedCalls parked_;                      // outlives the table, which wakes it
  std::unique_ptr<DaemonMetrics> metrics_;  // null when metrics are off; outlives the table
  std::unique_ptr<SequenceTable> table_;
  std::unique_ptr<TcpDataServer> tcp_data_;  // reads the table: declared after it
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<LeaseReaper> reaper_;
  PolicyDefaults policy_defaults_;
  GrpcConnectionStats grpc_connections_;
  // ListenGrpc's inputs, from the settings: the configured caps, and the fds kept for
  // every chunk, the attach connections and the daemon itself.
  GrpcConnectionLimits grpc_limits_;
  ConnectionAuthMarks connection_marks_;  // which gRPC connections authenticated
  absl::Duration grpc_idle_timeout_ = absl::Minutes(5);
  uint64_t fd_reserve_ = 0;
  std::unique_ptr<AttachServer> attach_;
  std::optional<ControlServiceImpl> control_;
  std::optional<AdminServiceImpl> admin_;
  std::optional<TransferServiceImpl> transfer_;
  std::optional<PeerServiceImpl> peer_;  // cluster mode only
  std::string metrics_address_;
  std::string config_text_, config_path_;
  std::function<void(bool)> set_serving_;
  TlsSettings tls_;
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> tls_acceptor_;
  ClusterSettings cluster_;
  std::unique_ptr<EtcdClient> etcd_;
  std::unique_ptr<ClusterView> view_;               // mirrors nodes and handles from etcd_
  std::unique_ptr<Handles> handles_;                // uses etcd_ and view_
  std::unique_ptr<TenantDirectory> tenants_;        // fleet-wide tenants: updates ledger_, auth_
  std::unique_ptr<Migrations> migrations_;          // uses etcd_, the table and handles_
  std::unique_ptr<NodeRegistration> registration_;  // describes the pools: goes before them
  std::unique_ptr<MetricsServer> metrics_server_;   // first to go: it reads every part
};

}  // namespace kvwarden
