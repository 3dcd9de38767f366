#pragma once

// kvwarden::client::ClusterClient: a worker's view of a kvwarden cluster (README,
// "Cluster mode"). It asks the daemons, never etcd: workers need no etcd access (etcd
// holds every tenant's entries and handles, and would let a worker rewrite them). It
// lists the nodes, places a new sequence (this worker's node first, else the node with
// the most free pages in a pool of that name), resolves a handle to a client of the node
// that holds the sequence, and migrates. Thread-safe.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kvwarden/client.h"

namespace kvwarden {
namespace client {

struct ClusterOptions {
  // host:port of daemons of the cluster, asked in order until one answers. The first is
  // taken to be this worker's own node (placed first) unless `local_node` names it.
  std::vector<std::string> seeds;
  std::string token;  // the tenant's, the same on every node (fleet-wide tenants)
  absl::Duration timeout = absl::Seconds(10);
  std::string local_node;
  std::string tls_ca_pem, tls_cert_pem, tls_key_pem, tls_server_name;  // as Options
};

// A sequence's handle resolved, with a client of the node that holds it.
struct ResolvedHandle {
  Handle handle;
  Client* client = nullptr;  // owned by the ClusterClient
};

class ClusterClient {
 public:
  // INVALID_ARGUMENT without a seed; does not block (the first call connects).
  static absl::StatusOr<std::unique_ptr<ClusterClient>> Connect(ClusterOptions options);
  ClusterClient(const ClusterClient&) = delete;
  ClusterClient& operator=(const ClusterClient&) = delete;

  // Every node (ListNodes of the first seed that answers); UNAVAILABLE naming every
  // seed when none does.
  absl::StatusOr<std::vector<NodeInfo>> Nodes();
  // This worker's node: `local_node`, else the node the first seed answered for.
  absl::StatusOr<std::string> LocalNode();
  // Where a new sequence in `pool` needing `pages` pages goes: this worker's node when
  // its pool has them free, else the node whose pool of that name (and `layout`, if
  // given) has the most free pages. NOT_FOUND when no node has such a pool,
  // RESOURCE_EXHAUSTED when none has the room (free pages are as of each node's last
  // refresh, a few seconds at most: CreateSequence there may still be refused).
  absl::StatusOr<NodeInfo> Place(const std::string& pool, uint64_t pages = 1,
                                 const std::optional<Layout>& layout = std::nullopt);
  // A client of `node` with this tenant's token (one per node, kept); NOT_FOUND for a
  // node the cluster does not list.
  absl::StatusOr<Client*> On(const std::string& node);
  // Where the tenant's sequence named `handle` is, and a client of its node.
  absl::StatusOr<ResolvedHandle> Resolve(const std::string& handle);
  // Moves `sequence_id` from `from_node` to `to_node` (Client::MigrateSequence there).
  absl::StatusOr<Migration> Migrate(const std::string& from_node, uint64_t sequence_id,
                                    const std::string& to_node, const MigrateOptions& options = {});

 private:
  explicit ClusterClient(ClusterOptions options);
  Options ClientOptions(const std::string& target) const;
  absl::StatusOr<Client*> ClientFor(const std::string& target) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<ClusterNodes> Ask();

  const ClusterOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Client>> clients_ ABSL_GUARDED_BY(mu_);
  std::string answered_self_ ABSL_GUARDED_BY(mu_);  // `self` of the first seed's answer
};

}  // namespace client
}  // namespace kvwarden
