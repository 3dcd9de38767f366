#include "cache_service/cluster/tenant_directory.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cache_service/util/log.h"
#include "common/codec/sha256.h"
#include "google/protobuf/util/json_util.h"

namespace kvwarden {
namespace {

bool ValidTenantName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      return false;
  }
  return true;
}

}  // namespace

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
    absl::MutexLock lock(&mu_);
    stats_.revision = std::max(stats_.revision, e.kv.mod_revision);
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

TenantDirectory::Stats TenantDirectory::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void TenantDirectory::Refuse(const std::string& key, int64_t revision, absl::string_view why) {
  {
    absl::MutexLock lock(&mu_);
    ++stats_.refused;
  }
  // Once per entry revision: a refused entry is not applied again until it changes.
  LogEvent(LogLevel::kWarning, "fleet_tenant_refused")
      .Field("key", key)
      .Field("revision", revision)
      .Field("reason", why);
}

void TenantDirectory::ApplyPut(const EtcdClient::KeyValue& kv) {
  const std::string name = kv.key.substr(prefix_.size());
  v1::FleetTenant entry;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = true;  // written by a newer kvwctl
  if (!ValidTenantName(name)) {
    return Refuse(kv.key, kv.mod_revision,
                  "the tenant name (the key's last part) must be 1-64 of [A-Za-z0-9._-]");
  }
  if (!google::protobuf::util::JsonStringToMessage(kv.value, &entry, parse).ok()) {
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
  {
    absl::MutexLock lock(&mu_);
    ++stats_.applied;
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
  {
    absl::MutexLock lock(&mu_);
    ++stats_.removed;
  }
  LogEvent(LogLevel::kInfo, "fleet_tenant_removed").Field("tenant", name);
}

void TenantDirectory::ApplyListing(const std::vector<EtcdClient::KeyValue>& kvs) {
  absl::flat_hash_map<std::string, bool> listed;
  int64_t revision = 0;
  for (const EtcdClient::KeyValue& kv : kvs) {
    listed[kv.key.substr(prefix_.size())] = true;
    revision = std::max(revision, kv.mod_revision);
    ApplyPut(kv);
  }
  std::vector<std::string> gone;
  for (const auto& [name, id] : known_) {
    if (!listed.contains(name)) gone.push_back(prefix_ + name);
  }
  for (const std::string& key : gone) ApplyDelete(key);
  absl::MutexLock lock(&mu_);
  stats_.synced = true;
  stats_.revision = std::max(stats_.revision, revision);
}

}  // namespace kvwarden
