#include "cache_service/core/tenancy/worker_leases.h"

#include "cache_service/util/random_id.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvwarden {

WorkerLeases::WorkerLeases(LeaseOptions options, const Clock* clock)
    : options_(options), clock_(clock) {}

absl::Status WorkerLeases::NotActive(LeaseId id) const {
  return absl::FailedPreconditionError(
      absl::StrCat("lease ", id, " is not active (lapsed, released or never granted)"));
}

absl::StatusOr<LeaseInfo> WorkerLeases::Register(TenantId tenant, std::string name,
                                                 WorkerRole role, absl::Duration ttl) {
  if (ttl == absl::ZeroDuration()) ttl = options_.default_ttl;
  if (ttl < options_.min_ttl || ttl > options_.max_ttl) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ttl_ms: %d is outside [%d, %d]", absl::ToInt64Milliseconds(ttl),
        absl::ToInt64Milliseconds(options_.min_ttl), absl::ToInt64Milliseconds(options_.max_ttl)));
  }
  absl::MutexLock lock(&mu_);
  uint32_t& held = tenant_leases_[tenant];
  if (options_.max_leases) {
    const uint32_t limit = options_.max_leases(tenant);
    if (held >= limit) {
      return options_.limit_refusal
                 ? options_.limit_refusal(tenant, limit)
                 : absl::ResourceExhaustedError(absl::StrFormat("at most %u worker leases per tenant", limit));
    }
  }
  ++held;
  LeaseId id = RandomId();
  while (leases_.contains(id)) id = RandomId();
  LeaseInfo info{id, tenant, std::move(name), role, ttl, clock_->Now() + ttl};
  leases_[info.id] = info;
  return info;
}

absl::StatusOr<absl::Duration> WorkerLeases::KeepAlive(LeaseId id, TenantId tenant) {
  absl::MutexLock lock(&mu_);
  auto it = leases_.find(id);
  const absl::Time now = clock_->Now();
  if (it == leases_.end() || it->second.tenant != tenant || it->second.expires <= now) {
    return NotActive(id);
  }
  it->second.expires = now + it->second.ttl;
  return it->second.ttl;
}

absl::Status WorkerLeases::CheckActive(LeaseId id, TenantId tenant) const {
  absl::MutexLock lock(&mu_);
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.tenant != tenant || it->second.expires <= clock_->Now()) {
    return NotActive(id);
  }
  return absl::OkStatus();
}

absl::StatusOr<LeaseInfo> WorkerLeases::FindActive(LeaseId id, TenantId tenant) const {
  absl::MutexLock lock(&mu_);
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.tenant != tenant || it->second.expires <= clock_->Now()) {
    return NotActive(id);
  }
  return it->second;
}

absl::StatusOr<LeaseInfo> WorkerLeases::Release(LeaseId id, TenantId tenant) {
  absl::MutexLock lock(&mu_);
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.tenant != tenant || it->second.expires <= clock_->Now()) {
    return NotActive(id);
  }
  LeaseInfo info = std::move(it->second);
  leases_.erase(it);
  --tenant_leases_[tenant];
  return info;
}

std::vector<LeaseInfo> WorkerLeases::TakeExpired() {
  std::vector<LeaseInfo> expired;
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (it->second.expires <= now) {
      --tenant_leases_[it->second.tenant];
      expired.push_back(std::move(it->second));
      leases_.erase(it++);
    } else {
      ++it;
    }
  }
  return expired;
}

std::vector<LeaseInfo> WorkerLeases::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<LeaseInfo> out;
  out.reserve(leases_.size());
  for (const auto& [id, info] : leases_) out.push_back(info);
  std::sort(out.begin(), out.end(), [](const LeaseInfo& a, const LeaseInfo& b) { return a.id < b.id; });
  return out;
}

}  // namespace kvwarden
