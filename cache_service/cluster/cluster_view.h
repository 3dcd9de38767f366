#pragma once

// What this node knows of its cluster, in memory: every node's entry (NodeInfo) and every
// handle (HandleInfo), mirrored from etcd by two PrefixWatchers (threads
// "kvw-nodes-view" and "kvw-handles-view"). ListNodes and ResolveHandle answer from it
// without a round trip to etcd. The mirror follows etcd within the watch's delivery
// (milliseconds), so a handle published a moment ago may be missing here: a caller
// checks a miss against etcd itself. At most `max_handles` handles are mirrored (the rest
// are misses). Entries that do not parse are left out. Thread-safe.

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/cluster/cluster_keys.h"
#include "common/cluster/etcd_client.h"
#include "common/cluster/prefix_watcher.h"
#include "kvwarden/v1/cluster.pb.h"

namespace kvwarden {

class ClusterView {
 public:
  struct Options {
    EtcdClient* etcd = nullptr;  // required; outlives this
    std::string key_prefix = kDefaultClusterPrefix;
    size_t max_handles = size_t{1} << 20;
    absl::Duration window = absl::Seconds(5);
  };

  explicit ClusterView(Options options);
  ClusterView(const ClusterView&) = delete;
  ClusterView& operator=(const ClusterView&) = delete;

  // Whether both prefixes were listed within `timeout`.
  bool WaitListed(absl::Duration timeout);
  // Every node, in name order.
  std::vector<v1::NodeInfo> Nodes() const;
  std::optional<v1::NodeInfo> Node(const std::string& name) const;
  // `tenant`'s handle as mirrored; nullopt for a miss.
  std::optional<v1::HandleInfo> Handle(const std::string& tenant, const std::string& handle) const;

 private:
  template <typename Info>
  using Mirror = absl::flat_hash_map<std::string, Info>;  // key -> entry

  const Options options_;
  const std::string nodes_prefix_, handles_prefix_;
  mutable absl::Mutex mu_;
  Mirror<v1::NodeInfo> nodes_ ABSL_GUARDED_BY(mu_);
  Mirror<v1::HandleInfo> handles_ ABSL_GUARDED_BY(mu_);
  // Last: their threads fill the mirrors.
  std::unique_ptr<PrefixWatcher> nodes_watcher_, handles_watcher_;
};

}  // namespace kvwarden
