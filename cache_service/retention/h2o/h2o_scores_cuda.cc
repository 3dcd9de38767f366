// H2oScoreRows in device memory (cuda:N pools): the rows live next to the pages; a
// message's attention goes to the device in one staged copy, and the accumulate, select
// and compaction kernels run on the pool's queue.

#include "cache_service/retention/h2o/h2o_scores.h"

#if defined(KVW_HAVE_CUDA)

#include <cstring>

#include "absl/strings/str_cat.h"
#include "cache_service/core/memory/cuda_queue.h"

namespace kvwarden {
namespace {

absl::Status Launch(kernels::KernelStatus k, const char* what) {
  if (k == kernels::KernelStatus::kOk) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("h2o ", what, " CUDA kernel failed (", static_cast<int>(k), ")"));
}

class CudaRows final : public H2oScoreRows {
 public:
  CudaRows(std::shared_ptr<CudaQueue> queue, size_t heads) : H2oScoreRows(heads), queue_(std::move(queue)) {}
  ~CudaRows() override {
    if (rows_ != nullptr) {
      queue_->Use();
      cudaFree(rows_);
    }
  }

  absl::StatusOr<std::unique_ptr<H2oScoreRows>> Clone() const override {
    auto copy = std::make_unique<CudaRows>(queue_, heads_);
    if (stride_ == 0) return std::unique_ptr<H2oScoreRows>(std::move(copy));
    const size_t bytes = heads_ * stride_ * 4;
    absl::MutexLock lock(&queue_->mu());
    queue_->Use();
    void* p = nullptr;
    if (absl::Status s = CudaError(cudaMalloc(&p, bytes), "cudaMalloc h2o scores"); !s.ok()) return s;
    copy->rows_ = static_cast<float*>(p);
    copy->stride_ = stride_;
    if (absl::Status s = CudaError(cudaMemcpyAsync(p, rows_, bytes, cudaMemcpyDeviceToDevice, queue_->stream()),
                                   "cudaMemcpyAsync h2o scores");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = queue_->Sync(); !s.ok()) return s;
    return std::unique_ptr<H2oScoreRows>(std::move(copy));
  }

  absl::Status Reserve(uint32_t slots) override {
    if (slots <= stride_) return absl::OkStatus();
    const uint32_t stride = GrownStride(slots);
    absl::MutexLock lock(&queue_->mu());
    queue_->Use();
    void* p = nullptr;
    if (absl::Status s = CudaError(cudaMalloc(&p, heads_ * stride * 4), "cudaMalloc h2o scores"); !s.ok()) return s;
    absl::Status s = CudaError(cudaMemsetAsync(p, 0, heads_ * stride * 4, queue_->stream()), "cudaMemsetAsync");
    if (s.ok() && stride_ > 0) {
      s = CudaError(cudaMemcpy2DAsync(p, size_t{stride} * 4, rows_, size_t{stride_} * 4, size_t{stride_} * 4, heads_,
                                      cudaMemcpyDeviceToDevice, queue_->stream()),
                    "cudaMemcpy2DAsync h2o scores");
    }
    if (s.ok()) s = queue_->Sync();
    if (!s.ok()) {
      cudaFree(p);
      return s;
    }
    if (rows_ != nullptr) cudaFree(rows_);
    rows_ = static_cast<float*>(p);
    stride_ = stride;
    return absl::OkStatus();
  }

  absl::Status Accumulate(uint32_t num_steps, const std::vector<uint32_t>& row_offsets,
                          const std::vector<float>& attention) override {
    if (stride_ == 0) return absl::OkStatus();
    absl::MutexLock lock(&queue_->mu());
    absl::StatusOr<std::vector<void*>> d =
        queue_->Stage({{row_offsets.data(), row_offsets.size() * 4}, {attention.data(), attention.size() * 4}});
    if (!d.ok()) return d.status();
    absl::Status s = Launch(kernels::H2oAccumulateCuda(Scores(0), static_cast<uint32_t>(heads_), num_steps,
                                                       static_cast<const uint32_t*>((*d)[0]),
                                                       static_cast<const float*>((*d)[1]), queue_->stream()),
                            "accumulate");
    const absl::Status synced = queue_->Sync();  // the arena is reused after us
    return s.ok() ? synced : s;
  }

  absl::Status Select(uint32_t first_lh, const std::vector<uint32_t>& live, const kernels::H2oParams& p,
                      std::vector<uint8_t>* keep) override {
    const std::vector<uint32_t> offsets = SegmentOffsets(live);
    const uint32_t total = offsets.back();
    absl::MutexLock lock(&queue_->mu());
    absl::StatusOr<std::vector<void*>> d = queue_->Stage({{offsets.data(), offsets.size() * 4}, {nullptr, total}});
    if (!d.ok()) return d.status();
    const kernels::Segments segs{static_cast<uint32_t>(live.size()), static_cast<const uint32_t*>((*d)[0])};
    if (absl::Status s = Launch(kernels::H2oSelectCuda(segs, Scores(first_lh), p, static_cast<uint8_t*>((*d)[1]),
                                                       queue_->stream()),
                                "select");
        !s.ok()) {
      (void)queue_->Sync();
      return s;
    }
    absl::StatusOr<const void*> host = queue_->Fetch((*d)[1], total);
    if (!host.ok()) return host.status();
    const uint8_t* mask = static_cast<const uint8_t*>(*host);
    keep->assign(mask, mask + total);
    return absl::OkStatus();
  }

  absl::Status Compact(const std::vector<HeadCompaction>& heads) override {
    if (heads.empty()) return absl::OkStatus();
    std::vector<CudaQueue::Part> parts;
    for (const HeadCompaction& c : heads) {
      parts.push_back({c.kept->data(), c.kept->size() * 4});
      parts.push_back({nullptr, c.kept->size() * 4});
    }
    absl::MutexLock lock(&queue_->mu());
    absl::StatusOr<std::vector<void*>> d = queue_->Stage(parts);
    if (!d.ok()) return d.status();
    for (size_t i = 0; i < heads.size(); ++i) {
      const HeadCompaction& c = heads[i];
      if (absl::Status s = Launch(kernels::H2oCompactHeadCuda(Scores(0), c.lh, static_cast<const uint32_t*>((*d)[2 * i]),
                                                              static_cast<uint32_t>(c.kept->size()), c.old_live,
                                                              static_cast<float*>((*d)[2 * i + 1]), queue_->stream()),
                                  "compaction");
          !s.ok()) {
        (void)queue_->Sync();
        return s;
      }
    }
    return queue_->Sync();
  }

  absl::Status ReadRows(std::vector<float>* rows) const override {
    const size_t n = heads_ * stride_;
    rows->assign(n, 0.0f);
    if (n == 0) return absl::OkStatus();
    absl::MutexLock lock(&queue_->mu());
    absl::StatusOr<const void*> host = queue_->Fetch(rows_, n * 4);
    if (!host.ok()) return host.status();
    std::memcpy(rows->data(), *host, n * 4);
    return absl::OkStatus();
  }

  absl::Status WriteRows(uint32_t src_stride, const std::vector<float>& rows) override {
    if (src_stride > stride_ || rows.size() != heads_ * src_stride) {
      return absl::InvalidArgumentError("h2o scores: rows of another shape");
    }
    if (stride_ == 0) return absl::OkStatus();
    absl::MutexLock lock(&queue_->mu());
    queue_->Use();
    absl::StatusOr<std::vector<void*>> d = queue_->Stage({{rows.data(), rows.size() * 4}});
    if (!d.ok()) return d.status();
    absl::Status s = CudaError(cudaMemsetAsync(rows_, 0, heads_ * stride_ * 4, queue_->stream()), "cudaMemsetAsync");
    if (s.ok() && src_stride > 0) {
      s = CudaError(cudaMemcpy2DAsync(rows_, size_t{stride_} * 4, (*d)[0], size_t{src_stride} * 4,
                                      size_t{src_stride} * 4, heads_, cudaMemcpyDeviceToDevice, queue_->stream()),
                    "cudaMemcpy2DAsync h2o scores");
    }
    const absl::Status synced = queue_->Sync();
    return s.ok() ? synced : s;
  }

 private:
  kernels::H2oScores Scores(uint32_t first_lh) const { return {rows_ + size_t{first_lh} * stride_, stride_}; }

  const std::shared_ptr<CudaQueue> queue_;
  float* rows_ = nullptr;  // device memory, [lh][stride]
};

}  // namespace

absl::StatusOr<std::unique_ptr<H2oScoreRows>> NewH2oScoreRows(PoolDevice& device, size_t heads) {
  std::shared_ptr<CudaQueue> queue = device.queue();
  if (queue == nullptr) return NewCpuH2oScoreRows(heads);
  return std::unique_ptr<H2oScoreRows>(std::make_unique<CudaRows>(std::move(queue), heads));
}

}  // namespace kvwarden

#else

namespace kvwarden {

absl::StatusOr<std::unique_ptr<H2oScoreRows>> NewH2oScoreRows(PoolDevice& device, size_t heads) {
  if (device.queue() != nullptr) return absl::InternalError("a device queue in a build without CUDA");
  return NewCpuH2oScoreRows(heads);
}

}  // namespace kvwarden

#endif  // KVW_HAVE_CUDA
