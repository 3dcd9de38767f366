#pragma once

// Tenants' names for their sequences, cluster-wide (README, "Cluster mode"): this node
// publishes each handle of a sequence it holds at <key_prefix>/handles/<tenant>/<handle>
// (a HandleInfo as JSON) under its own etcd lease, so a handle lives no longer than its
// node; it deletes the key when the sequence ends (unless the sequence migrated: the
// target has written its own entry over it by then), and writes every handle again
// when the node registers under a new lease. etcd calls run on one thread,
// "kvw-handles", never on a gRPC thread. Thread-safe.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cache_service/core/ids.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "common/cluster/etcd_client.h"
#include "kvwarden/v1/cluster.pb.h"

namespace kvwarden {

class SerialWorker;
class ClusterView;

class Handles {
 public:
  struct Options {
    EtcdClient* etcd = nullptr;            // required; outlives this
    const TenantLedger* ledger = nullptr;  // required: tenants' names
    std::string key_prefix;
    std::string node;
    // The node's etcd lease now (0: not registered), from NodeRegistration.
    std::function<int64_t()> node_lease;
    // Whether the sequence still exists here (it may end while its handle is written).
    std::function<bool(SequenceId)> alive;
    // The node's mirror of etcd: Resolve answers a hit from it at once; may be null.
    const ClusterView* view = nullptr;
  };
  using Done = std::function<void(absl::StatusOr<v1::HandleInfo>)>;

  explicit Handles(Options options);
  ~Handles();
  Handles(const Handles&) = delete;
  Handles& operator=(const Handles&) = delete;

  // INVALID_ARGUMENT unless `handle` is 1 to 200 of letters, digits, '.', '_', '-', ':'.
  static absl::Status CheckName(absl::string_view handle);
  // Where other nodes and clients reach this one (set when it joins the cluster).
  void SetAddress(std::string grpc_address);

  // Names `sequence` of `tenant`; `done` runs on the handles' thread (or here, for a
  // request refused at once). ALREADY_EXISTS when the name is taken anywhere or the
  // sequence has a handle.
  void Publish(TenantId tenant, SequenceId sequence, const std::string& handle, Done done);
  // The same, blocking, for a sequence this node adopted: overwrites the entry (it was
  // the source's) so the handle follows the sequence here.
  absl::Status PublishAdopted(TenantId tenant, SequenceId sequence, const std::string& handle);
  // Where the tenant's handle points: from the mirror when it has it (no etcd round
  // trip, on the calling thread), else from etcd on the handles' thread.
  void Resolve(TenantId tenant, const std::string& handle, Done done);
  // The sequence's handle here (empty: none).
  std::string HandleOf(SequenceId sequence) const;
  // The sequence ended here: its entry goes, unless it `migrated` (the target owns it).
  void SequenceEnded(SequenceId sequence, bool migrated);
  // On the registration's thread after a new lease: every handle written again under it.
  void Republish(int64_t lease);

 private:
  struct Entry {
    TenantId tenant = kNoTenant;
    std::string handle;
    v1::HandleInfo info;
    std::string value;  // `info` as the JSON written: deletes compare against it
  };
  std::string Key(const Entry& e) const;
  absl::StatusOr<Entry> MakeEntry(TenantId tenant, SequenceId sequence,
                                  const std::string& handle) const;

  const Options options_;
  mutable absl::Mutex mu_;
  std::string address_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<SequenceId, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<SerialWorker> worker_;  // last: its jobs use the rest
};

}  // namespace kvwarden
