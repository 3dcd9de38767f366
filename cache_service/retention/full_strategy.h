#pragma once

#include "cache_service/core/retention_strategy.h"

namespace kvwarden {

// Keeps every token: no state, no statistics, nothing to squeeze; the only policy
// whose forks share full pages (it never compacts them in place).
class FullStrategy final : public RetentionStrategy {
 public:
  bool ForkSharesPages() const override { return true; }
};

}  // namespace kvwarden
