#pragma once

// Moving sequences between the daemons of a cluster (README, "Cluster mode"). Both
// halves live here, each on a thread of its own so no gRPC thread waits on another
// daemon:
//
// - out ("kvw-migrate-out"), the source: finds the target in etcd, pins the sequence
//   under a migration transfer lease (SequenceTable::BeginMigration: writes stop, every
//   page gets a CRC-32C), asks the target to adopt it (PeerService.AdoptSequence, with
//   the cluster's peer token) and releases it here only once the target answered OK;
//   on any failure the sequence takes writes again, unchanged.
// - in ("kvw-migrate-in"), the target: reads the pages from the source's TCP data path
//   (the grant's id and secret came with the request), checks each page's checksum and
//   only then inserts the sequence for the same tenant (SequenceTable::Adopt); nothing
//   is kept on any failure.
//
// The pages cross the network through the daemons' own grant-checked TCP data path,
// never UCX RMA: over TCP, UCX would let the peer address any memory of the source.
// Thread-safe; jobs are served in order, one at a time per direction.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cache_service/cluster/handles.h"
#include "cache_service/core/memory/pool_set.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "cache_service/core/tenancy/authenticator.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "cache_service/core/tenancy/worker_leases.h"
#include "common/cluster/etcd_client.h"
#include "grpcpp/security/credentials.h"
#include "kvwarden/v1/control.pb.h"
#include "kvwarden/v1/peer.grpc.pb.h"

namespace kvwarden {

class SerialWorker;
class ClusterView;

class Migrations {
 public:
  struct Options {
    SequenceTable* table = nullptr;  // all required, outlive this
    TenantLedger* ledger = nullptr;
    WorkerLeases* leases = nullptr;
    const PoolSet* pools = nullptr;
    EtcdClient* etcd = nullptr;
    std::string key_prefix;
    std::string node;  // this daemon's name
    // The cluster's shared secret for daemon-to-daemon calls (sent to targets); empty:
    // migrations are off.
    std::string peer_token;
    const Authenticator* auth = nullptr;  // checks callers' peer token
    Handles* handles = nullptr;           // required: a handle moves with its sequence
    // The node's mirror of etcd: nodes are looked up there first (etcd on a miss); may
    // be null.
    const ClusterView* view = nullptr;
    // Credentials for calling other daemons (TLS when this daemon serves TLS).
    std::shared_ptr<grpc::ChannelCredentials> peer_credentials;
    // This daemon's TCP data path port (0: off, and so are migrations out).
    uint16_t data_port = 0;
    // Told of every migration that ended here (metrics): source or target, its status and
    // the page bytes moved. May be empty.
    std::function<void(bool out, absl::StatusCode code, uint64_t bytes)> on_result;
  };
  using OutDone = std::function<void(absl::StatusOr<v1::MigrateSequenceResponse>)>;
  using InDone = std::function<void(absl::StatusOr<v1::AdoptSequenceResponse>)>;

  explicit Migrations(Options options);
  // Stop()s.
  ~Migrations();
  Migrations(const Migrations&) = delete;
  Migrations& operator=(const Migrations&) = delete;

  // The host other daemons reach this one at (the advertised address's host): known
  // once the node joined the cluster.
  void SetAdvertisedHost(std::string host);

  // Before the gRPC server shuts down (it waits for every call's answer): pending jobs
  // are answered UNAVAILABLE, a running one is cut short (its call to the target is
  // cancelled, an adoption stops between layers) and every call is answered. Idempotent.
  void Stop();

  // At most this many migrations of one tenant wait or run here at once (of
  // SerialWorker::kMaxPending for all), so one tenant cannot keep the others' out.
  static constexpr int kMaxPendingPerTenant = 16;

  // Source: migrates `req.sequence_id` (visible to `caller`) to `req.target_node`; `done`
  // runs on the out thread (or here, for a request refused at once).
  void MigrateOut(const Caller& caller, const v1::MigrateSequenceRequest& req, OutDone done);
  // Target: `authorization` is the call's metadata value; refused UNAUTHENTICATED unless
  // it carries the peer token. `done` runs on the in thread (or here).
  void AdoptIn(absl::string_view authorization, const v1::AdoptSequenceRequest& req, InDone done);

 private:
  absl::StatusOr<v1::MigrateSequenceResponse> RunOut(const Caller& caller,
                                                     const v1::MigrateSequenceRequest& req);
  absl::StatusOr<v1::AdoptSequenceResponse> RunIn(const v1::AdoptSequenceRequest& req);
  // `node`'s entry: the mirror's, else etcd's. NOT_FOUND, UNAVAILABLE (etcd) or
  // FAILED_PRECONDITION (not a NodeInfo).
  absl::StatusOr<v1::NodeInfo> FindNode(const std::string& node) const;

  const Options options_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::string advertised_host_;                     // guarded by mu_
  grpc::ClientContext* adopt_call_ = nullptr;       // the call to a target under way; mu_
  absl::flat_hash_map<TenantId, int> pending_out_;  // waiting or running, by tenant; mu_
  std::unique_ptr<SerialWorker> out_;
  std::unique_ptr<SerialWorker> in_;
};

}  // namespace kvwarden
