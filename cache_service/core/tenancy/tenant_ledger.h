#pragma once

// TenantLedger: each tenant's hard quota and what it holds, over all pools.
// Quotas are checked and charged in one step (Charge), so two concurrent callers can
// never overshoot. Thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
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

struct TenantSpec {
  std::string name;
  uint64_t quota_bytes = 0;  // 0 = no byte limit
  uint64_t quota_pages = 0;  // 0 = no page limit
  uint32_t weight = 1;
  TenantLimits limits;
};

// RESOURCE_EXHAUSTED for a tenant at one of its limits, naming the limit (only the
// caller's own numbers).
absl::Status TenantLimitReached(const TenantSpec& spec, const char* limit, uint32_t value, const char* what);

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
  // Tenant ids are indices into `tenants`.
  explicit TenantLedger(std::vector<TenantSpec> tenants);

  std::optional<TenantId> Find(const std::string& name) const;
  const TenantSpec& spec(TenantId id) const { return specs_[id]; }
  size_t size() const { return specs_.size(); }

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
  const std::vector<TenantSpec> specs_;  // immutable
  mutable absl::Mutex mu_;
  std::vector<TenantUsage> usage_ ABSL_GUARDED_BY(mu_);
};

// "1.5 MiB"-style rendering for messages and tables.
std::string HumanBytes(uint64_t bytes);

}  // namespace kvwarden
