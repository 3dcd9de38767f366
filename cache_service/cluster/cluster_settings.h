#pragma once

// Cluster mode's settings: the `cluster {}` config block, with the --cluster and --node
// flags over it (README, "Cluster mode").

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/cluster/cluster_keys.h"
#include "common/cluster/etcd_client.h"

namespace kvwarden {

struct ClusterSettings {
  std::vector<std::string> endpoints;  // etcd members, host:port; empty: cluster mode off
  std::string node;                    // this daemon's name in the cluster
  absl::Duration lease_ttl = absl::Seconds(10);
  std::string advertise;  // host:port others call; "": the bound gRPC address
  std::string key_prefix = kDefaultClusterPrefix;
  std::string peer_token;     // shared by the cluster's daemons; empty: no migrations
  bool fleet_tenants = true;  // watch <key_prefix>/tenants (off: local_tenants_only)
  EtcdClient::Tls etcd_tls;   // cluster.etcd_tls, read; empty ca: plaintext

  bool enabled() const { return !endpoints.empty(); }
};

// Checks the settings once flags and config are merged; INVALID_ARGUMENT naming the
// config field ("cluster.node: ...").
absl::Status ValidateClusterSettings(const ClusterSettings& s);

// The address a node publishes: `advertise` when set, else the bound gRPC address with
// a wildcard host (0.0.0.0, [::], empty) replaced by this machine's host name.
std::string AdvertisedAddress(const ClusterSettings& s, const std::string& bound_address);

}  // namespace kvwarden
