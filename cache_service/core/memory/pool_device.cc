#include "cache_service/core/memory/pool_device.h"

namespace kvwarden {

std::shared_ptr<void> PoolDevice::PolicyLocalErased(const void* tag,
                                                    absl::FunctionRef<std::shared_ptr<void>()> make) {
  absl::MutexLock lock(&locals_mu_);
  std::shared_ptr<void>& local = locals_[tag];
  if (local == nullptr) local = make();
  return local;
}

}  // namespace kvwarden
