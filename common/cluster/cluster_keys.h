#pragma once

// Where a kvwarden cluster keeps its entries in etcd, for the daemons that write them and
// the tools that read them (kvwctl cluster).

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace kvwarden {

// A tenant's or a pool's name: 1-64 of [A-Za-z0-9._-]. A tenant's name is a part of its
// etcd keys (handles, fleet-wide tenants): this is also what keeps such a key one tenant's.
inline bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      return false;
  }
  return true;
}

// The default key prefix. Versioned so a later layout can live beside this one during an
// upgrade.
inline constexpr char kDefaultClusterPrefix[] = "/kvwarden/v1";

// <prefix>/nodes/: every node's entry (a NodeInfo as JSON) is a key under it.
inline std::string NodesPrefix(absl::string_view prefix) { return absl::StrCat(prefix, "/nodes/"); }
// <prefix>/nodes/<node>: one node's entry.
inline std::string NodeKey(absl::string_view prefix, absl::string_view node) {
  return absl::StrCat(NodesPrefix(prefix), node);
}

// <prefix>/handles/<tenant>/<handle>: the sequence a tenant named `handle` (a HandleInfo
// as JSON), under the etcd lease of the node that holds it.
inline std::string HandleKey(absl::string_view prefix, absl::string_view tenant,
                             absl::string_view handle) {
  return absl::StrCat(prefix, "/handles/", tenant, "/", handle);
}

// <prefix>/tenants/: the fleet-wide tenants (a FleetTenant as JSON each), written by an
// operator and watched by every node.
inline std::string TenantsPrefix(absl::string_view prefix) {
  return absl::StrCat(prefix, "/tenants/");
}
inline std::string TenantKey(absl::string_view prefix, absl::string_view tenant) {
  return absl::StrCat(TenantsPrefix(prefix), tenant);
}

}  // namespace kvwarden
