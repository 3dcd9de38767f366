#include "cache_service/cluster/tenant_directory.h"

#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "cache_service/util/log.h"
#include "common/cluster/entry_json.h"
#include "common/codec/sha256.h"

namespace kvwarden {

TenantDirectory::TenantDirectory(Options options)
    : options_(std::move(options)), prefix_(TenantsPrefix(options_.key_prefix)) {
  PrefixWatcher::Options w;
  w.etcd = options_.etcd;
  w.prefix = prefix_;
  w.thread_name = "kvw-tenants";
  w.window = options_.window;
  w.on_listing = [this](const std::vector<EtcdClient::KeyValue>& kvs) { ApplyListing(kvs); };
  w.on_event = [this](const EtcdClient::WatchEvent& e) {
    if (e.deleted) {
      ApplyDelete(e.kv.key);
    } else {
      ApplyPut(e.kv);
    }
  };
  w.on_unreachable = [](const absl::Status& s) {
    // Once per outage: the tenants last seen stay in force.
    LogEvent(LogLevel::kWarning, "fleet_tenants_etcd_unreachable")
        .Field("error", s.message())
        .Field("retry_s", 1);
  };
  w.on_back = [] { LogEvent(LogLevel::kInfo, "fleet_tenants_etcd_back"); };
  watcher_ = std::make_unique<PrefixWatcher>(std::move(w));
}

bool TenantDirectory::WaitSynced(absl::Duration timeout) { return watcher_->WaitListed(timeout); }

void TenantDirectory::Refuse(const std::string& key, int64_t revision, absl::string_view why) {
  // Logged each time the entry is seen: when written, and at each listing after an outage.
  LogEvent(LogLevel::kWarning, "fleet_tenant_refused")
      .Field("key", key)
      .Field("revision", revision)
      .Field("reason", why);
}

void TenantDirectory::ApplyPut(const EtcdClient::KeyValue& kv) {
  const std::string name = kv.key.substr(prefix_.size());
  v1::FleetTenant entry;
  if (!ValidName(name)) {
    return Refuse(kv.key, kv.mod_revision,
                  "the tenant name (the key's last part) must be 1-64 of [A-Za-z0-9._-]");
  }
  if (!ParseEntry(kv.value, &entry)) {
    return Refuse(kv.key, kv.mod_revision, "not a FleetTenant in JSON");
  }
  if (!entry.name().empty() && entry.name() != name) {
    return Refuse(kv.key, kv.mod_revision,
                  absl::StrCat("its name '", entry.name(), "' is not the key's '", name, "'"));
  }
  std::string digest;
  if (!ParseSha256Hex(entry.token_sha256(), &digest)) {
    return Refuse(kv.key, kv.mod_revision, "token_sha256 must be 64 hex digits");
  }
  if (entry.quota_bytes() == 0 && entry.quota_pages() == 0) {
    return Refuse(kv.key, kv.mod_revision, "set quota_bytes or quota_pages (quotas are hard)");
  }
  TenantSpec spec;
  spec.name = name;
  spec.quota_bytes = entry.quota_bytes();
  spec.quota_pages = entry.quota_pages();
  spec.weight = entry.weight() ? entry.weight() : 1;
  spec.limits = options_.limits ? options_.limits(entry.limits()) : TenantLimits();
  const auto known = known_.find(name);
  TenantId id;
  if (known != known_.end()) {
    // The token first: if it clashes, the quota stays as it was too.
    id = known->second;
    if (absl::Status s = options_.auth->SetTenantDigest(id, digest); !s.ok()) {
      return Refuse(kv.key, kv.mod_revision, s.message());
    }
    (void)options_.ledger->Upsert(spec);  // an id it made: cannot fail
  } else {
    absl::StatusOr<TenantId> added = options_.ledger->Upsert(spec);
    if (!added.ok()) return Refuse(kv.key, kv.mod_revision, added.status().message());
    id = *added;
    if (absl::Status s = options_.auth->SetTenantDigest(id, digest); !s.ok()) {
      options_.ledger->MarkRemoved(id);  // listed as removed until a good entry comes
      return Refuse(kv.key, kv.mod_revision, s.message());
    }
    known_[name] = id;
  }
  LogEvent(LogLevel::kInfo, "fleet_tenant_applied")
      .Field("tenant", name)
      .Field("quota_pages", spec.quota_pages)
      .Field("quota_bytes", spec.quota_bytes)
      .Field("weight", spec.weight)
      .Field("revision", kv.mod_revision);
}

void TenantDirectory::ApplyDelete(const std::string& key) {
  const std::string name = key.substr(prefix_.size());
  auto it = known_.find(name);
  if (it == known_.end()) return;
  options_.auth->RemoveTenant(it->second);
  options_.ledger->MarkRemoved(it->second);
  known_.erase(it);
  LogEvent(LogLevel::kInfo, "fleet_tenant_removed").Field("tenant", name);
}

void TenantDirectory::ApplyListing(const std::vector<EtcdClient::KeyValue>& kvs) {
  absl::flat_hash_set<std::string> listed;
  for (const EtcdClient::KeyValue& kv : kvs) {
    listed.insert(kv.key.substr(prefix_.size()));
    ApplyPut(kv);
  }
  std::vector<std::string> gone;
  for (const auto& [name, id] : known_) {
    if (!listed.contains(name)) gone.push_back(prefix_ + name);
  }
  for (const std::string& key : gone) ApplyDelete(key);
}

}  // namespace kvwarden
