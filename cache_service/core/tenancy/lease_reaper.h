#pragma once

#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "cache_service/core/tenancy/worker_leases.h"

namespace kvwarden {

// Releases the sequences of lapsed worker leases and ends expired transfer leases,
// every `interval`, on one thread named
// "kvw-lease-reap". Stops (and joins) on destruction.
class LeaseReaper {
 public:
  LeaseReaper(WorkerLeases* leases, SequenceTable* table, absl::Duration interval);
  ~LeaseReaper();
  LeaseReaper(const LeaseReaper&) = delete;
  LeaseReaper& operator=(const LeaseReaper&) = delete;

  // One collection pass; returns the number of sequences released.
  static size_t ReapOnce(WorkerLeases& leases, SequenceTable& table);

 private:
  WorkerLeases* const leases_;
  SequenceTable* const table_;
  const absl::Duration interval_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace kvwarden
