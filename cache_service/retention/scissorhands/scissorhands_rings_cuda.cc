// ScissorhandsRings in device memory (cuda:N pools): the history planes live next to
// the pages; a step's ids go to the device through the queue's pinned arena in one
// copy, and the record, select and compaction kernels run on the queue's stream.

#include "cache_service/retention/scissorhands/scissorhands_rings_cuda.h"

#if defined(KVW_HAVE_CUDA)

#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvwarden {
namespace {

absl::Status Launch(kernels::KernelStatus k, const char* what) {
  if (k == kernels::KernelStatus::kOk) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("scissorhands ", what, " CUDA kernel failed (", static_cast<int>(k), ")"));
}

class CudaRings final : public ScissorhandsRings {
 public:
  CudaRings(std::shared_ptr<CudaRecordBatcher> records, size_t heads, uint32_t window)
      : ScissorhandsRings(heads, window), records_(std::move(records)), queue_(records_->queue()) {}
  ~CudaRings() override {
    if (planes_ != nullptr) {
      queue_->Use();
      cudaFree(planes_);
    }
  }

  absl::StatusOr<std::unique_ptr<ScissorhandsRings>> Clone() const override {
    auto copy = std::make_unique<CudaRings>(records_, heads_, window_);
    if (stride_ == 0) return std::unique_ptr<ScissorhandsRings>(std::move(copy));
    const size_t bytes = heads_ * words_per_head(stride_) * 4;
    absl::MutexLock lock(&queue_->mu());
    queue_->Use();
    void* p = nullptr;
    if (absl::Status s = CudaError(cudaMalloc(&p, bytes), "cudaMalloc scissorhands rings"); !s.ok()) return s;
    copy->planes_ = static_cast<uint32_t*>(p);
    copy->stride_ = stride_;
    if (absl::Status s = CudaError(cudaMemcpyAsync(p, planes_, bytes, cudaMemcpyDeviceToDevice, queue_->stream()),
                                   "cudaMemcpyAsync rings");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = queue_->Sync(); !s.ok()) return s;
    return std::unique_ptr<ScissorhandsRings>(std::move(copy));
  }

  absl::Status Reserve(uint32_t slots) override {
    if (slots <= stride_) return absl::OkStatus();
    const uint32_t stride = GrownStride(slots);
    const size_t planes = heads_ * kernels::ScissorhandsWords(window_);
    absl::MutexLock lock(&queue_->mu());
    queue_->Use();
    void* p = nullptr;
    if (absl::Status s = CudaError(cudaMalloc(&p, planes * stride * 4), "cudaMalloc scissorhands rings"); !s.ok()) {
      return s;
    }
    absl::Status s = CudaError(cudaMemsetAsync(p, 0, planes * stride * 4, queue_->stream()), "cudaMemsetAsync");
    if (s.ok() && stride_ > 0) {
      s = CudaError(cudaMemcpy2DAsync(p, size_t{stride} * 4, planes_, size_t{stride_} * 4, size_t{stride_} * 4,
                                      planes, cudaMemcpyDeviceToDevice, queue_->stream()),
                    "cudaMemcpy2DAsync rings");
    }
    if (s.ok()) s = queue_->Sync();
    if (!s.ok()) {
      cudaFree(p);
      return s;
    }
    if (planes_ != nullptr) cudaFree(planes_);
    planes_ = static_cast<uint32_t*>(p);
    stride_ = stride;
    return absl::OkStatus();
  }

  // All steps in one launch (a group per head walks them in order), which may also carry
  // other sequences' steps (CudaRecordBatcher).
  absl::Status Record(uint64_t first_step, uint32_t num_steps, const std::vector<uint32_t>& live,
                      const std::vector<uint32_t>& attended,
                      const std::vector<kernels::ListedIds>& listed) override {
    const std::vector<uint32_t> offsets = SegmentOffsets(live);
    kernels::ScissorhandsRecordBatch batch;
    if (kernels::AppendScissorhandsRecordSteps(
            {static_cast<uint32_t>(live.size()), offsets.data()}, History(0), first_step, num_steps,
            attended.data(), listed.data(), &batch) != kernels::KernelStatus::kOk) {
      return absl::InternalError("scissorhands record: steps that do not fit the history rings");
    }
    return records_->Record(batch);
  }

  absl::Status Select(uint32_t first_lh, const std::vector<uint32_t>& live, const kernels::ScissorhandsParams& p,
                      std::vector<uint8_t>* keep) override {
    const std::vector<uint32_t> offsets = SegmentOffsets(live);
    const uint32_t total = offsets.back();
    absl::MutexLock lock(&queue_->mu());
    absl::StatusOr<std::vector<void*>> d =
        queue_->Stage({{offsets.data(), offsets.size() * 4}, {nullptr, total}, {nullptr, size_t{total} * 4}});
    if (!d.ok()) return d.status();
    const kernels::Segments segs{static_cast<uint32_t>(live.size()), static_cast<const uint32_t*>((*d)[0])};
    if (absl::Status s = Launch(kernels::ScissorhandsSelectCuda(segs, History(first_lh), p,
                                                                static_cast<uint8_t*>((*d)[1]),
                                                                static_cast<uint32_t*>((*d)[2]), queue_->stream()),
                                "select");
        !s.ok()) {
      (void)queue_->Sync();  // the staging copy still reads the arena
      return s;
    }
    absl::StatusOr<const void*> host = queue_->Fetch((*d)[1], total);
    if (!host.ok()) return host.status();
    const uint8_t* mask = static_cast<const uint8_t*>(*host);
    keep->assign(mask, mask + total);
    return absl::OkStatus();
  }

  // One staging copy for every head's kept list (and its scratch), the per-head kernels
  // queued back to back on the stream, one synchronisation: a layer used to cost one
  // round trip to the device per head.
  absl::Status Compact(const std::vector<HeadCompaction>& heads) override {
    if (heads.empty()) return absl::OkStatus();
    std::vector<CudaQueue::Part> parts;
    for (const HeadCompaction& c : heads) {
      parts.push_back({c.kept->data(), c.kept->size() * 4});
      parts.push_back({nullptr, c.kept->size() * kernels::ScissorhandsWords(window_) * 4});
    }
    absl::MutexLock lock(&queue_->mu());
    absl::StatusOr<std::vector<void*>> d = queue_->Stage(parts);
    if (!d.ok()) return d.status();
    for (size_t i = 0; i < heads.size(); ++i) {
      const HeadCompaction& c = heads[i];
      if (absl::Status s = Launch(kernels::ScissorhandsCompactHeadCuda(
                                      History(0), c.lh, static_cast<const uint32_t*>((*d)[2 * i]),
                                      static_cast<uint32_t>(c.kept->size()), c.old_live,
                                      static_cast<uint32_t*>((*d)[2 * i + 1]), queue_->stream()),
                                  "compaction");
          !s.ok()) {
        // What was queued still reads the staging arena: drain it before the next caller
        // refills the arena.
        (void)queue_->Sync();
        return s;
      }
    }
    return queue_->Sync();
  }

  absl::Status LowCounts(uint32_t lh, uint32_t live, std::vector<uint32_t>* counts) const override {
    counts->assign(live, 0);
    if (live == 0) return absl::OkStatus();
    const uint32_t words = kernels::ScissorhandsWords(window_);
    absl::MutexLock lock(&queue_->mu());
    absl::StatusOr<const void*> host = queue_->Fetch(planes_ + lh * words_per_head(stride_), words_per_head(stride_) * 4);
    if (!host.ok()) return host.status();
    const uint32_t* planes = static_cast<const uint32_t*>(*host);
    for (uint32_t w = 0; w < words; ++w) {
      for (uint32_t j = 0; j < live; ++j) (*counts)[j] += kernels::PopCount32(planes[size_t{w} * stride_ + j]);
    }
    return absl::OkStatus();
  }

  absl::Status ReadPlanes(std::vector<uint32_t>* planes) const override {
    const size_t words = heads_ * words_per_head(stride_);
    planes->assign(words, 0);
    if (words == 0) return absl::OkStatus();
    absl::MutexLock lock(&queue_->mu());
    absl::StatusOr<const void*> host = queue_->Fetch(planes_, words * 4);
    if (!host.ok()) return host.status();
    std::memcpy(planes->data(), *host, words * 4);
    return absl::OkStatus();
  }

  // Staged in one copy, then laid out at this ring's stride on the device.
  absl::Status WritePlanes(uint32_t src_stride, const std::vector<uint32_t>& planes) override {
    const size_t count = heads_ * kernels::ScissorhandsWords(window_);
    if (src_stride > stride_ || planes.size() != count * src_stride) {
      return absl::InvalidArgumentError("scissorhands rings: planes of another shape");
    }
    if (stride_ == 0) return absl::OkStatus();
    absl::MutexLock lock(&queue_->mu());
    queue_->Use();
    absl::StatusOr<std::vector<void*>> d = queue_->Stage({{planes.data(), planes.size() * 4}});
    if (!d.ok()) return d.status();
    absl::Status s = CudaError(cudaMemsetAsync(planes_, 0, count * stride_ * 4, queue_->stream()), "cudaMemsetAsync");
    if (s.ok() && src_stride > 0) {
      s = CudaError(cudaMemcpy2DAsync(planes_, size_t{stride_} * 4, (*d)[0], size_t{src_stride} * 4,
                                      size_t{src_stride} * 4, count, cudaMemcpyDeviceToDevice, queue_->stream()),
                    "cudaMemcpy2DAsync rings");
    }
    const absl::Status synced = queue_->Sync();
    return s.ok() ? synced : s;
  }

 private:
  kernels::ScissorhandsHistory History(uint32_t first_lh) const {
    return {planes_ + first_lh * words_per_head(stride_), window_, stride_};
  }

  const std::shared_ptr<CudaRecordBatcher> records_;
  const std::shared_ptr<CudaQueue> queue_;  // records_->queue()
  uint32_t* planes_ = nullptr;  // device memory, [lh][word][stride]
};

}  // namespace

CudaRecordBatcher::CudaRecordBatcher(std::shared_ptr<CudaQueue> queue)
    : queue_(std::move(queue)),
      combiner_([this](const std::vector<const Job*>& batch) { return LaunchBatch(batch); }) {}

absl::Status CudaRecordBatcher::Record(const kernels::ScissorhandsRecordBatch& batch) {
  if (batch.group_ends.empty()) return absl::OkStatus();
  return combiner_.Run(batch);
}

// One staging copy of every job's descriptors, groups and ids (joined, ranges rebased),
// one kernel, one synchronisation. Runs on whichever caller combines.
absl::Status CudaRecordBatcher::LaunchBatch(const std::vector<const Job*>& batch) {
  const kernels::ScissorhandsRecordBatch* all = batch.front();
  kernels::ScissorhandsRecordBatch joined;
  if (batch.size() > 1) {
    size_t ids = 0;
    for (const Job* job : batch) ids += job->ids.size();
    if (ids > UINT32_MAX)
      return absl::ResourceExhaustedError("scissorhands record: a batch of more than 2^32 ids");
    for (const Job* job : batch) kernels::AppendScissorhandsRecordBatch(*job, &joined);
    all = &joined;
  }
  absl::MutexLock lock(&queue_->mu());
  absl::StatusOr<std::vector<void*>> d = queue_->Stage(
      {{all->heads.data(), all->heads.size() * sizeof(kernels::ScissorhandsRecordHead)},
       {all->group_ends.data(), all->group_ends.size() * 4},
       {all->ids.data(), all->ids.size() * 4}});
  if (!d.ok()) return d.status();
  if (absl::Status s = Launch(
          kernels::ScissorhandsRecordBatchCuda(
              static_cast<const kernels::ScissorhandsRecordHead*>((*d)[0]),
              static_cast<const uint32_t*>((*d)[1]), static_cast<uint32_t>(all->group_ends.size()),
              static_cast<const uint32_t*>((*d)[2]), queue_->stream()),
          "record");
      !s.ok()) {
    (void)queue_->Sync();  // the staged copy may still be queued: drain before the arena is reused
    return s;
  }
  return queue_->Sync();
}

std::unique_ptr<ScissorhandsRings> NewCudaScissorhandsRings(
    std::shared_ptr<CudaRecordBatcher> records, size_t heads, uint32_t window) {
  return std::make_unique<CudaRings>(std::move(records), heads, window);
}

namespace {
const char kBatcherTag = 0;  // the device's CudaRecordBatcher, as its PolicyLocal
}  // namespace

std::shared_ptr<CudaRecordBatcher> DeviceRecordBatcher(PoolDevice& device) {
  std::shared_ptr<CudaQueue> queue = device.queue();
  if (queue == nullptr) return nullptr;
  return device.PolicyLocal<CudaRecordBatcher>(
      &kBatcherTag, [&] { return std::make_shared<CudaRecordBatcher>(std::move(queue)); });
}

}  // namespace kvwarden

#endif  // KVW_HAVE_CUDA
