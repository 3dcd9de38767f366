#include "cache_service/retention/scissorhands/scissorhands_rings.h"

#include "cache_service/retention/scissorhands/scissorhands_rings_cuda.h"

namespace kvwarden {

absl::StatusOr<std::unique_ptr<ScissorhandsRings>> NewScissorhandsRings(PoolDevice& device, size_t heads,
                                                                        uint32_t window) {
  if (device.queue() == nullptr) return NewCpuScissorhandsRings(heads, window);
#if defined(KVW_HAVE_CUDA)
  return NewCudaScissorhandsRings(DeviceRecordBatcher(device), heads, window);
#else
  return absl::InternalError("a device queue in a build without CUDA");
#endif
}

}  // namespace kvwarden
