#pragma once

#include <cstdint>
#include <limits>

namespace kvwarden {

using PageId = uint32_t;
using TenantId = uint32_t;
using SequenceId = uint64_t;
using LeaseId = uint64_t;

inline constexpr TenantId kNoTenant = std::numeric_limits<TenantId>::max();

// Who is asking: a tenant (worker calls) or the operator (admin token).
struct Caller {
  TenantId tenant = kNoTenant;
  bool admin = false;

  static Caller Tenant(TenantId t) { return Caller{t, false}; }
  static Caller Admin() { return Caller{kNoTenant, true}; }
  bool CanSee(TenantId owner) const { return admin || owner == tenant; }
};

}  // namespace kvwarden
