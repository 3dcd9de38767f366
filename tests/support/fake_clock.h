#pragma once

#include "absl/synchronization/mutex.h"
#include "cache_service/util/clock.h"

namespace kvwarden::testing {

// A clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1'700'000'000);
};

}  // namespace kvwarden::testing
