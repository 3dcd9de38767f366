#pragma once

// WorkerLeases: registered worker processes, each held by a lease with a TTL.
// A lease that is not kept alive lapses; LeaseReaper then releases what it held.
// Another tenant's lease id is treated as unknown. Thread-safe.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cache_service/util/clock.h"
#include "cache_service/core/ids.h"

namespace kvwarden {

enum class WorkerRole { kPrefill = 1, kDecode = 2, kBoth = 3 };

struct LeaseOptions {
  absl::Duration default_ttl = absl::Seconds(10);
  absl::Duration min_ttl = absl::Milliseconds(100);
  absl::Duration max_ttl = absl::Minutes(5);
  // Per-tenant cap on live leases and where a refusal is counted (TenantLimits);
  // empty = no cap.
  std::function<uint32_t(TenantId)> max_leases;
  std::function<absl::Status(TenantId, uint32_t limit)> limit_refusal;
};

struct LeaseInfo {
  LeaseId id = 0;
  TenantId tenant = kNoTenant;
  std::string name;
  WorkerRole role = WorkerRole::kBoth;
  absl::Duration ttl;
  absl::Time expires;
};

class WorkerLeases {
 public:
  WorkerLeases(LeaseOptions options, const Clock* clock);

  // `ttl` zero means the default; outside [min_ttl, max_ttl] is INVALID_ARGUMENT.
  absl::StatusOr<LeaseInfo> Register(TenantId tenant, std::string name, WorkerRole role,
                                     absl::Duration ttl);
  // FAILED_PRECONDITION when the lease is unknown, another tenant's, or has lapsed.
  absl::StatusOr<absl::Duration> KeepAlive(LeaseId id, TenantId tenant);
  absl::Status CheckActive(LeaseId id, TenantId tenant) const;
  // The active lease `id` of `tenant`; FAILED_PRECONDITION like CheckActive otherwise.
  absl::StatusOr<LeaseInfo> FindActive(LeaseId id, TenantId tenant) const;

  // Removes the active lease `id` of `tenant` now (FAILED_PRECONDITION like CheckActive
  // otherwise); the caller then releases what it held (SequenceTable::ReleaseByLease).
  absl::StatusOr<LeaseInfo> Release(LeaseId id, TenantId tenant);
  // Removes and returns every lapsed lease.
  std::vector<LeaseInfo> TakeExpired();
  std::vector<LeaseInfo> List() const;
  const Clock* clock() const { return clock_; }

 private:
  absl::Status NotActive(LeaseId id) const;

  const LeaseOptions options_;
  const Clock* const clock_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<LeaseId, LeaseInfo> leases_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<TenantId, uint32_t> tenant_leases_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvwarden
