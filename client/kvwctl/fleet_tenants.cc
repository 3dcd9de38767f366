#include "client/kvwctl/fleet_tenants.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/cluster/cluster_keys.h"
#include "common/cluster/entry_json.h"

namespace kvwarden::kvwctl {

absl::StatusOr<v1::FleetTenant> EditFleetTenant(const std::optional<v1::FleetTenant>& current,
                                                const FleetTenantEdit& edit) {
  if (!ValidName(edit.name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tenant name '", edit.name, "' must be 1-64 of [A-Za-z0-9._-]"));
  }
  v1::FleetTenant t = current.value_or(v1::FleetTenant());
  t.set_name(edit.name);
  if (edit.token_sha256) t.set_token_sha256(*edit.token_sha256);
  if (edit.quota_bytes) t.set_quota_bytes(*edit.quota_bytes);
  if (edit.quota_pages) t.set_quota_pages(*edit.quota_pages);
  if (edit.weight) t.set_weight(*edit.weight);
  if (edit.max_sequences) t.mutable_limits()->set_max_sequences(*edit.max_sequences);
  if (edit.max_worker_leases) t.mutable_limits()->set_max_worker_leases(*edit.max_worker_leases);
  if (edit.max_open_streams) t.mutable_limits()->set_max_open_streams(*edit.max_open_streams);
  if (t.token_sha256().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tenant '", edit.name, "' is new: give its token (--token-file or --token-sha256)"));
  }
  if (t.quota_bytes() == 0 && t.quota_pages() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tenant '", edit.name, "' needs --quota-bytes or --quota-pages (quotas are hard)"));
  }
  t.set_updated_unix_ms(absl::ToUnixMillis(absl::Now()));
  return t;
}

std::string FleetTenantJson(const v1::FleetTenant& t) { return EntryJson(t); }

absl::StatusOr<v1::FleetTenant> ParseFleetTenant(const std::string& json) {
  v1::FleetTenant t;
  if (!ParseEntry(json, &t)) {
    return absl::InvalidArgumentError("not a FleetTenant in JSON");
  }
  return t;
}

std::vector<ClusterTenant> SumTenants(
    const std::vector<std::pair<std::string, v1::ListTenantsResponse>>& by_node) {
  std::map<std::string, ClusterTenant> sums;
  for (const auto& [node, resp] : by_node) {
    for (const v1::TenantInfo& x : resp.tenants()) {
      ClusterTenant& c = sums[x.name()];
      c.name = x.name();
      const std::string source = x.source().empty() ? "config" : x.source();
      if (c.source.empty()) {
        c.source = source;
      } else if (c.source != source) {
        c.source = "config+cluster";
      }
      if (x.removed()) {
        c.removed_somewhere = true;
      } else {
        c.nodes.push_back(node);
      }
      c.quota_pages = std::max(c.quota_pages, x.quota_pages());
      c.quota_bytes = std::max(c.quota_bytes, x.quota_bytes());
      c.used_pages += x.used_pages();
      c.used_bytes += x.used_bytes();
      c.quota_refusals += x.quota_refusals();
      c.sequences += x.sequences();
      c.workers += x.workers();
    }
  }
  std::vector<ClusterTenant> out;
  for (auto& [name, c] : sums) out.push_back(std::move(c));
  return out;
}

}  // namespace kvwarden::kvwctl
