#pragma once

// Fleet-wide tenants: keeps this node's ledger and token table in step with the
// FleetTenant entries under <key_prefix>/tenants/ in etcd, through a PrefixWatcher on
// one thread named "kvw-tenants" (lists the prefix, then watches it):
//
// - a put adds the tenant or changes its quota, weight, limits or token at once (the
//   next reservation is charged against the new quota; what a tenant holds is never
//   taken back); a delete refuses its token from then on;
// - an entry that is not a valid FleetTenant, names a tenant of this node's config, or
//   shares a token with another tenant is refused and logged, and changes nothing (a
//   tenant keeps its last good entry);
// - etcd being unreachable changes nothing: the node serves the tenants it last saw and
//   lists again when etcd answers; a watch is re-created every `window`, so a frozen
//   member is left within two windows.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cache_service/core/tenancy/authenticator.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "common/cluster/cluster_keys.h"
#include "common/cluster/etcd_client.h"
#include "common/cluster/prefix_watcher.h"
#include "kvwarden/v1/cluster.pb.h"

namespace kvwarden {

class TenantDirectory {
 public:
  struct Options {
    EtcdClient* etcd = nullptr;      // required; outlive this
    TenantLedger* ledger = nullptr;  // required
    Authenticator* auth = nullptr;   // required
    std::string key_prefix = kDefaultClusterPrefix;
    // A FleetTenant's limits over this node's defaults (daemon_config's tenant_limits).
    std::function<TenantLimits(const v1::TenantLimitsConfig&)> limits;
    absl::Duration window = absl::Seconds(5);
  };

  // Starts the thread; the first listing is attempted at once.
  explicit TenantDirectory(Options options);
  TenantDirectory(const TenantDirectory&) = delete;
  TenantDirectory& operator=(const TenantDirectory&) = delete;

  // Whether the first listing was applied within `timeout` (a daemon waits a moment at
  // start, so a fleet-wide tenant's first call is not refused).
  bool WaitSynced(absl::Duration timeout);

 private:
  // Applies a listing whole: tenants missing from it are removed.
  void ApplyListing(const std::vector<EtcdClient::KeyValue>& kvs);
  void ApplyPut(const EtcdClient::KeyValue& kv);
  void ApplyDelete(const std::string& key);
  void Refuse(const std::string& key, int64_t revision, absl::string_view why);

  const Options options_;
  const std::string prefix_;  // <key_prefix>/tenants/
  // The fleet-wide tenants applied, by name: only the kvw-tenants thread touches it.
  absl::flat_hash_map<std::string, TenantId> known_;
  std::unique_ptr<PrefixWatcher> watcher_;  // last: its thread uses the rest
};

}  // namespace kvwarden
