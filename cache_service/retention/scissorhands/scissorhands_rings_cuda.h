#pragma once

#include "cache_service/retention/scissorhands/scissorhands_rings.h"

#if defined(KVW_HAVE_CUDA)

#include <memory>
#include <vector>

#include "cache_service/core/memory/cuda_queue.h"
#include "common/sync/batch_combiner.h"

namespace kvwarden {

// The record steps of every ring on one device queue go through one BatchCombiner: stats
// messages of many sequences that arrive while a launch is in flight share the next one
// (one staging copy, one kernel, one synchronisation) instead of queueing for a round
// trip to the device each; a lone message launches at once, all its steps together.
// Thread-safe. A ring's owner waits in Record, so a launch never holds two messages of
// one ring, and a message's steps of one head are one group the kernel walks in order.
class CudaRecordBatcher {
 public:
  explicit CudaRecordBatcher(std::shared_ptr<CudaQueue> queue);
  const std::shared_ptr<CudaQueue>& queue() const { return queue_; }
  // Records `batch` (device planes), possibly in one launch with other callers' batches;
  // returns when it is recorded.
  absl::Status Record(const kernels::ScissorhandsRecordBatch& batch);
  // Launches so far (records / launches is the batching).
  uint64_t launches() const { return combiner_.batches(); }

 private:
  using Job = kernels::ScissorhandsRecordBatch;
  absl::Status LaunchBatch(const std::vector<const Job*>& batch);

  const std::shared_ptr<CudaQueue> queue_;
  BatchCombiner<Job> combiner_;
};

// The batcher of `device`'s queue, made on first use (null for host memory).
std::shared_ptr<CudaRecordBatcher> DeviceRecordBatcher(PoolDevice& device);

// Device memory on the batcher's device, CUDA kernels on its queue's stream.
std::unique_ptr<ScissorhandsRings> NewCudaScissorhandsRings(
    std::shared_ptr<CudaRecordBatcher> records, size_t heads, uint32_t window);

}  // namespace kvwarden

#endif  // KVW_HAVE_CUDA
