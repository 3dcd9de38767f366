#pragma once

// TenantLedger: each tenant's hard quota and what it holds, over all pools.
// Quotas are checked and charged in one step (Charge), so two concurrent callers can
// never overshoot. Thread-safe.
//
// Tenants come from the config file (fixed) and, in cluster mode, from etcd (fleet-wide:
// added, changed and removed while the daemon runs, by Upsert and MarkRemoved). Ids are
// stable for the daemon's life: a tenant is never dropped, so every id a sequence or
// lease carries stays valid; a removed one is only marked.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cache_service/core/ids.h"

namespace kvwarden {

// Per-tenant caps on things that cost the daemon memory or fds but no quota pages, so
// no tenant can exhaust them for the others (config.proto: TenantLimitsConfig).
struct TenantLimits {
  uint32_t max_sequences = 16384;
  uint32_t max_worker_leases = 256;
  uint32_t max_open_streams = 64;  // WriteKV, ReadKV and StreamStats streams at once
  uint32_t max_transfers = 1024;
  uint32_t max_attach_connections = 64;
};

enum class TenantSource { kConfig, kCluster };

struct TenantSpec {
  std::string name;
  uint64_t quota_bytes = 0;  // 0 = no byte limit
  uint64_t quota_pages = 0;  // 0 = no page limit
  uint32_t weight = 1;
  TenantLimits limits;
  TenantSource source = TenantSource::kConfig;
  bool removed = false;  // a fleet-wide tenant deleted from etcd
};

const char* TenantSourceName(TenantSource s);

// RESOURCE_EXHAUSTED for a tenant at one of its limits, naming the limit (only the
// caller's own numbers).
absl::Status TenantLimitReached(const TenantSpec& spec, const char* limit, uint32_t value,
                                const char* what);

struct TenantUsage {
  TenantId id = kNoTenant;
  uint64_t pages = 0;
  uint64_t bytes = 0;
  uint64_t peak_pages = 0;
  uint64_t quota_refusals = 0;
  uint32_t open_streams = 0;
  uint64_t limit_refusals = 0;  // any TenantLimits cap
};

class TenantLedger {
 public:
  // At most this many tenants over the daemon's life (config and fleet-wide together).
  static constexpr size_t kMaxTenants = 4096;

  // Tenant ids are indices into `tenants`.
  explicit TenantLedger(std::vector<TenantSpec> tenants);

  // A tenant not removed, by name.
  std::optional<TenantId> Find(const std::string& name) const;
  // A copy: a fleet-wide tenant's spec may change at any time.
  TenantSpec spec(TenantId id) const;
  std::string name(TenantId id) const;  // never changes
  uint32_t weight(TenantId id) const;
  TenantLimits limits(TenantId id) const;
  size_t size() const;

  // Adds the fleet-wide tenant `spec` (source kCluster), or changes the one of that name
  // (a removed one comes back, with what it still held): its id. The new quota applies
  // to the next Charge; what the tenant holds is never taken back. FAILED_PRECONDITION
  // when the name is a config tenant's, RESOURCE_EXHAUSTED past kMaxTenants.
  absl::StatusOr<TenantId> Upsert(TenantSpec spec);
  // Marks a fleet-wide tenant removed (Find no longer sees it); config tenants stay.
  void MarkRemoved(TenantId id);

  // Charges `pages` pages of `page_bytes` each, or returns RESOURCE_EXHAUSTED naming the
  // tenant, its quota and its usage and charges nothing.
  absl::Status Charge(TenantId id, uint64_t pages, uint64_t page_bytes);
  void Refund(TenantId id, uint64_t pages, uint64_t page_bytes);
  // Whether Charge would take `pages` now (nothing is charged).
  bool CouldCharge(TenantId id, uint64_t pages, uint64_t page_bytes) const;

  // Streams (WriteKV, ReadKV, StreamStats) a tenant has open: at most
  // limits.max_open_streams, since each holds a message buffer in the daemon.
  absl::Status OpenStream(TenantId id);
  void CloseStream(TenantId id);
  // Counts a refusal by any limit (for kvwctl tenants).
  void CountLimitRefusal(TenantId id);

  TenantUsage Usage(TenantId id) const;
  std::vector<TenantUsage> AllUsage() const;

 private:
  mutable absl::Mutex mu_;
  std::vector<TenantSpec> specs_ ABSL_GUARDED_BY(mu_);  // by id; only appended to
  std::vector<TenantUsage> usage_ ABSL_GUARDED_BY(mu_);
};

// "1.5 MiB"-style rendering for messages and tables.
std::string HumanBytes(uint64_t bytes);

}  // namespace kvwarden
