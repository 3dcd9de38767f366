#pragma once

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kvwarden {

// Source of time, injected so lease expiry is testable without sleeping.
// Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;

  // The process-wide wall clock.
  static const Clock* Real();
};

}  // namespace kvwarden
