#include "cache_service/core/sequences/retention_policy.h"

#include "absl/strings/str_cat.h"
#include "cache_service/core/sequences/retention_strategy.h"

namespace kvwarden {

const RetentionStrategy& RetentionPolicy::Strategy() const {
  return strategy != nullptr ? *strategy : RetentionStrategy::KeepAll();
}

std::string RetentionPolicy::Name() const { return Strategy().name(); }

std::string RetentionPolicy::Summary() const {
  if (params == nullptr) return Name();
  return absl::StrCat(Name(), " ", params->Summary());
}

}  // namespace kvwarden
