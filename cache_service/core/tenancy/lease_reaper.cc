#include "cache_service/core/tenancy/lease_reaper.h"

#include <pthread.h>

#include "cache_service/util/log.h"

namespace kvwarden {

LeaseReaper::LeaseReaper(WorkerLeases* leases, SequenceTable* table, absl::Duration interval)
    : leases_(leases), table_(table), interval_(interval) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kvw-lease-reap");
    while (!stop_.WaitForNotificationWithTimeout(interval_)) ReapOnce(*leases_, *table_);
  });
}

LeaseReaper::~LeaseReaper() {
  stop_.Notify();
  thread_.join();
}

size_t LeaseReaper::ReapOnce(WorkerLeases& leases, SequenceTable& table) {
  size_t released = 0;
  for (const LeaseInfo& lease : leases.TakeExpired()) {
    const size_t n = table.ReleaseByLease(lease.id);
    table.events().LeaseLapsed();
    released += n;
    LogEvent(LogLevel::kInfo, "lease_lapsed")
        .Field("lease", lease.id)
        .Field("worker", lease.name)
        .Field("tenant", table.ledger().name(lease.tenant))
        .Field("sequences_released", n);
  }
  if (const size_t ended = table.ExpireTransfers(); ended > 0) {
    LogEvent(LogLevel::kInfo, "transfers_expired").Field("count", ended);
  }
  return released;
}

}  // namespace kvwarden
