#pragma once

#include "absl/time/time.h"
#include "cache_service/authenticator.h"
#include "cache_service/pool_set.h"
#include "cache_service/sequence_table.h"
#include "cache_service/tenant_ledger.h"
#include "cache_service/worker_leases.h"

namespace kvwarden {

// The parts the gRPC services talk to, wired in main. Not owned; all outlive the server.
struct ServiceContext {
  const PoolSet* pools = nullptr;
  TenantLedger* ledger = nullptr;
  SequenceTable* table = nullptr;
  WorkerLeases* leases = nullptr;
  const Authenticator* auth = nullptr;
  absl::Time started = absl::Now();
};

}  // namespace kvwarden
