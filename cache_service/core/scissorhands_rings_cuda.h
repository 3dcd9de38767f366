#pragma once

#include "cache_service/core/scissorhands_rings.h"

#if defined(KVW_HAVE_CUDA)

#include <memory>
#include <vector>

#include "cache_service/core/cuda_queue.h"
#include "common/sync/batch_combiner.h"

namespace kvwarden {

// The record step of every ring on one device queue goes through one BatchCombiner:
// stats messages of many sequences that arrive while a launch is in flight share the
// next one (one staging copy, one kernel, one synchronisation) instead of queueing for
// a round trip to the device each. A lone message launches at once. Thread-safe. A
// ring's owner waits in Record, so one launch never holds two steps of one ring (their
// read-modify-writes of a plane word would race).
class CudaRecordBatcher {
 public:
  explicit CudaRecordBatcher(std::shared_ptr<CudaQueue> queue);
  const std::shared_ptr<CudaQueue>& queue() const { return queue_; }
  // Records `heads` (device planes; listed ranges index `ids`), possibly in one launch
  // with other callers' heads; returns when they are recorded.
  absl::Status Record(const std::vector<kernels::ScissorhandsRecordHead>& heads,
                      const std::vector<uint32_t>& ids);
  // Launches so far (records / launches is the batching).
  uint64_t launches() const { return combiner_.batches(); }

 private:
  struct Job {
    const std::vector<kernels::ScissorhandsRecordHead>* heads;
    const std::vector<uint32_t>* ids;
  };
  absl::Status LaunchBatch(const std::vector<const Job*>& batch);

  const std::shared_ptr<CudaQueue> queue_;
  BatchCombiner<Job> combiner_;
};

// Device memory on the batcher's device, CUDA kernels on its queue's stream.
std::unique_ptr<ScissorhandsRings> NewCudaScissorhandsRings(
    std::shared_ptr<CudaRecordBatcher> records, size_t heads, uint32_t window);

}  // namespace kvwarden

#endif  // KVW_HAVE_CUDA
