#pragma once

// kvwctl's side of fleet-wide tenants (cluster mode): editing the FleetTenant entries in
// etcd and summing what every node reports about its tenants.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvwarden/v1/admin.pb.h"
#include "kvwarden/v1/cluster.pb.h"

namespace kvwarden::kvwctl {

// What `kvwctl tenants set` was given; unset fields keep the entry's current values.
struct FleetTenantEdit {
  std::string name;
  std::optional<std::string> token_sha256;  // lowercase hex
  std::optional<uint64_t> quota_bytes, quota_pages;
  std::optional<uint32_t> weight;
  std::optional<uint32_t> max_sequences, max_worker_leases, max_open_streams;
};

// The entry after `edit`, over `current` (nullopt: a new tenant, which needs a token and
// a quota). INVALID_ARGUMENT naming what is wrong.
absl::StatusOr<v1::FleetTenant> EditFleetTenant(const std::optional<v1::FleetTenant>& current,
                                                const FleetTenantEdit& edit);
// An entry as stored: JSON with the proto's field names. Parse accepts unknown fields.
std::string FleetTenantJson(const v1::FleetTenant& t);
absl::StatusOr<v1::FleetTenant> ParseFleetTenant(const std::string& json);

// One tenant over the whole cluster: what each node holds for it, summed.
struct ClusterTenant {
  std::string name;
  std::string source;              // "cluster", "config", or "config+cluster" when nodes differ
  std::vector<std::string> nodes;  // nodes that serve it
  uint64_t quota_pages = 0, quota_bytes = 0;  // per node (the largest seen)
  uint64_t used_pages = 0, used_bytes = 0, quota_refusals = 0;
  uint32_t sequences = 0, workers = 0;
  bool removed_somewhere = false;
};
// Sums the nodes' ListTenants answers, by tenant name, in name order.
std::vector<ClusterTenant> SumTenants(
    const std::vector<std::pair<std::string, v1::ListTenantsResponse>>& by_node);

}  // namespace kvwarden::kvwctl
