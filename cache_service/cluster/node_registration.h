#pragma once

// Keeps this daemon's entry, <key_prefix>/nodes/<node> (a NodeInfo as JSON), in etcd
// for as long as it runs, on one thread named "kvw-cluster":
//
// - the entry is attached to an etcd lease of `ttl`, renewed every ttl / 3, so two
//   renewals can fail before it lapses, and the pools' free pages are refreshed with
//   each renewal (a bounded rate: at most one write per ttl / 3);
// - when etcd has lost the lease (an outage longer than the ttl, an etcd restart
//   without its data), the thread grants a new one and writes the entry again;
// - etcd being unreachable never stops the daemon: local traffic goes on, the thread
//   retries each second and logs once per outage;
// - on destruction the lease is revoked, so a clean stop removes the entry at once; a
//   killed daemon's entry goes when its lease expires.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "cache_service/cluster/cluster_settings.h"
#include "common/cluster/etcd_client.h"
#include "kvwarden/v1/cluster.pb.h"

namespace kvwarden {

class NodeRegistration {
 public:
  struct Options {
    EtcdClient* etcd = nullptr;  // required; outlives this
    std::string key_prefix = kDefaultClusterPrefix;
    std::string node;  // required
    absl::Duration ttl = absl::Seconds(10);
    // The entry as of now (pools and free pages); called on the kvw-cluster thread.
    std::function<v1::NodeInfo()> describe;
    // The entry's lease changed: a new one after (re)registering, 0 once it is lost or
    // revoked. Called on the kvw-cluster thread (0 also from the destructor); may block
    // (handles are written again under the new lease).
    std::function<void(int64_t lease)> on_lease;
  };
  // Starts the thread; the first registration is attempted on it at once.
  explicit NodeRegistration(Options options);
  ~NodeRegistration();
  NodeRegistration(const NodeRegistration&) = delete;
  NodeRegistration& operator=(const NodeRegistration&) = delete;

  // Whether the entry is in etcd as of the last attempt, and under which lease.
  bool registered() const;
  // How many times the entry was (re)written under a new lease: 1 after the first
  // registration, +1 after each recovery from a lost lease.
  uint64_t registrations() const;

 private:
  void Run();
  // Grants a lease and writes the entry; false (logged) when etcd does not answer.
  bool Register();
  // Renews the lease and refreshes the entry; false when the lease is gone or etcd
  // does not answer.
  bool Renew();
  absl::Status WriteEntry(int64_t lease);

  const Options options_;
  const std::string key_;
  absl::Notification stop_;
  mutable absl::Mutex mu_;
  int64_t lease_ ABSL_GUARDED_BY(mu_) = 0;  // 0: not registered
  uint64_t registrations_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace kvwarden
