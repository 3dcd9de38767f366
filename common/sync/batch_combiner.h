#pragma once

// Flat combining: callers that arrive while one of them is executing queue their jobs,
// and the next caller to run executes everything queued so far as one batch. A lone
// caller runs its own job at once (a batch of one, no added latency); under contention
// N callers cost one batch instead of N rounds. Used where each execution has a fixed
// cost worth sharing: a CUDA launch plus a host<->device round trip.
//
// Thread-safety: Run may be called from any number of threads. A caller blocks until its
// job has executed; while it waits it may execute one batch holding other callers' jobs
// (at most the jobs queued when that batch began, never an open-ended loop). `execute`
// must not call Run on the same combiner.

#include <functional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace kvwarden {

template <typename Job>
class BatchCombiner {
 public:
  // Executes a batch (in arrival order) and returns one status for all of its jobs.
  using Execute = std::function<absl::Status(const std::vector<const Job*>& batch)>;

  explicit BatchCombiner(Execute execute) : execute_(std::move(execute)) {}
  BatchCombiner(const BatchCombiner&) = delete;
  BatchCombiner& operator=(const BatchCombiner&) = delete;

  // Executes `job` (possibly with others) and returns its batch's status. `job` must stay
  // valid until Run returns.
  absl::Status Run(const Job& job) ABSL_LOCKS_EXCLUDED(mu_) {
    Entry entry;
    entry.job = &job;
    mu_.Lock();
    pending_.push_back(&entry);
    auto done_or_idle = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return entry.done || !executing_;
    };
    while (true) {
      mu_.Await(absl::Condition(&done_or_idle));
      if (entry.done) break;
      // Nobody executes and this job still waits: run what has queued, this job included.
      std::vector<Entry*> batch;
      batch.swap(pending_);
      executing_ = true;
      ++batches_;
      mu_.Unlock();
      std::vector<const Job*> jobs;
      jobs.reserve(batch.size());
      for (const Entry* e : batch) jobs.push_back(e->job);
      const absl::Status status = execute_(jobs);
      mu_.Lock();
      for (Entry* e : batch) {
        e->status = status;
        e->done = true;
      }
      executing_ = false;
    }
    absl::Status status = std::move(entry.status);
    mu_.Unlock();
    return status;
  }

  // Batches executed so far (for tests and operators: jobs / batches is the combining).
  uint64_t batches() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return batches_;
  }

 private:
  struct Entry {
    const Job* job = nullptr;
    bool done = false;
    absl::Status status;
  };

  const Execute execute_;
  mutable absl::Mutex mu_;
  std::vector<Entry*> pending_ ABSL_GUARDED_BY(mu_);
  bool executing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t batches_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvwarden
