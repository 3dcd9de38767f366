#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kvwarden {

// Calls whose work must wait for another client (a transfer lease to end) are parked
// here instead of blocking a gRPC callback thread: the RPC handler returns, and one
// thread, "kvw-parked", tries the work again whenever a transfer ends. A parked call is
// failed with DEADLINE_EXCEEDED at its deadline, CANCELLED when its caller goes away, and
// UNAVAILABLE at shutdown, at once in every case.
//
// Thread-safety: every method may be called from any thread. `attempt` runs on the
// caller's thread first, later on kvw-parked, never two at once for one call; `finish`
// runs exactly once, on either, never under ParkedCalls' lock.
class ParkedCalls {
 public:
  struct Call {
    absl::Time deadline = absl::InfiniteFuture();
    std::function<bool()> cancelled;  // may be empty
    // The work: a status with IsTransferBusy() means "not yet", anything else is final.
    std::function<absl::Status()> attempt;
    std::function<void(absl::Status)> finish;
    // Whose call it is: each tenant parks at most its share (SetTenantShare).
    uint64_t tenant = 0;
  };

  explicit ParkedCalls(size_t max_parked = 4096);
  ~ParkedCalls();  // Shutdown()
  ParkedCalls(const ParkedCalls&) = delete;
  ParkedCalls& operator=(const ParkedCalls&) = delete;

  // Runs the attempt now; parks the call when it answers transfer-busy. Over
  // `max_parked` parked calls, or its tenant's share, the busy answer is final
  // (UNAVAILABLE, retryable).
  void Run(Call call);
  // Each tenant parks at most `per_tenant` calls (default: no share of its own), so one
  // tenant cannot fill the room every tenant's calls wait in.
  void SetTenantShare(size_t per_tenant);
  // A transfer lease ended somewhere: every parked call is tried again.
  void Wake();
  // Fails every parked call with UNAVAILABLE and parks none from now on. Idempotent.
  void Shutdown();
  size_t parked() const;

 private:
  void Loop();
  // Fails the calls of `calls` that are cancelled or past their deadline; tries the rest
  // again when `retry`. Returns those still parked.
  std::vector<Call> Sweep(std::vector<Call> calls, bool retry);

  const size_t max_parked_;
  mutable absl::Mutex mu_;
  std::vector<Call> parked_ ABSL_GUARDED_BY(mu_);
  size_t per_tenant_ ABSL_GUARDED_BY(mu_) = SIZE_MAX;
  // Parked (or in a sweep) per tenant.
  absl::flat_hash_map<uint64_t, size_t> by_tenant_ ABSL_GUARDED_BY(mu_);
  size_t in_sweep_ ABSL_GUARDED_BY(mu_) = 0;  // taken out by the loop, counted in parked()
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace kvwarden
