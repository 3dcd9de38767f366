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
#include "cache_service/ids.h"

namespace kvwarden {

struct TenantSpec {
  std::string name;
  uint64_t quota_bytes = 0;  // 0 = no byte limit
  uint64_t quota_pages = 0;  // 0 = no page limit
  uint32_t weight = 1;
};

struct TenantUsage {
  TenantId id = kNoTenant;
  uint64_t pages = 0;
  uint64_t bytes = 0;
  uint64_t peak_pages = 0;
  uint64_t quota_refusals = 0;
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
