#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cache_service/retention/scissorhands/scissorhands_rings.h"

namespace kvwarden {
namespace {

absl::Status KernelError(const char* what) {
  return absl::InternalError(absl::StrCat("scissorhands ", what, " kernel refused validated input"));
}

class CpuRings final : public ScissorhandsRings {
 public:
  CpuRings(size_t heads, uint32_t window) : ScissorhandsRings(heads, window) {}

  absl::StatusOr<std::unique_ptr<ScissorhandsRings>> Clone() const override {
    return std::unique_ptr<ScissorhandsRings>(new CpuRings(*this));
  }

  absl::Status Reserve(uint32_t slots) override {
    if (slots <= stride_) return absl::OkStatus();
    const uint32_t stride = GrownStride(slots);
    const uint32_t words = kernels::ScissorhandsWords(window_);
    std::vector<uint32_t> grown(heads_ * words_per_head(stride), 0);
    for (size_t plane = 0; plane < heads_ * words && stride_ > 0; ++plane) {
      std::copy_n(planes_.begin() + plane * stride_, stride_, grown.begin() + plane * stride);
    }
    planes_ = std::move(grown);
    stride_ = stride;
    return absl::OkStatus();
  }

  // Steps sharing a plane word go in one pass (ScissorhandsRecordStepsCpu): a stats
  // message of several steps reads and writes the history once, not once per step.
  absl::Status Record(uint64_t first_step, uint32_t num_steps, const std::vector<uint32_t>& live,
                      const std::vector<uint32_t>& attended,
                      const std::vector<kernels::ListedIds>& listed) override {
    const std::vector<uint32_t> offsets = SegmentOffsets(live);
    if (kernels::ScissorhandsRecordStepsCpu({static_cast<uint32_t>(live.size()), offsets.data()},
                                            History(0), first_step, num_steps, attended.data(),
                                            listed.data()) != kernels::KernelStatus::kOk) {
      return KernelError("record");
    }
    return absl::OkStatus();
  }

  absl::Status Select(uint32_t first_lh, const std::vector<uint32_t>& live, const kernels::ScissorhandsParams& p,
                      std::vector<uint8_t>* keep) override {
    const std::vector<uint32_t> offsets = SegmentOffsets(live);
    keep->assign(offsets.back(), 1);
    if (kernels::ScissorhandsSelectCpu({static_cast<uint32_t>(live.size()), offsets.data()}, History(first_lh), p,
                                       keep->data(), nullptr) != kernels::KernelStatus::kOk) {
      return KernelError("select");
    }
    return absl::OkStatus();
  }

  absl::Status Compact(const std::vector<HeadCompaction>& heads) override {
    for (const HeadCompaction& c : heads) {
      if (kernels::ScissorhandsCompactHeadCpu(History(0), c.lh, c.kept->data(), static_cast<uint32_t>(c.kept->size()),
                                              c.old_live) != kernels::KernelStatus::kOk) {
        return KernelError("compaction");
      }
    }
    return absl::OkStatus();
  }

  absl::Status LowCounts(uint32_t lh, uint32_t live, std::vector<uint32_t>* counts) const override {
    counts->assign(live, 0);
    const uint32_t words = kernels::ScissorhandsWords(window_);
    for (uint32_t w = 0; w < words; ++w) {
      const uint32_t* plane = planes_.data() + (size_t{lh} * words + w) * stride_;
      for (uint32_t j = 0; j < live; ++j) (*counts)[j] += kernels::PopCount32(plane[j]);
    }
    return absl::OkStatus();
  }

  absl::Status ReadPlanes(std::vector<uint32_t>* planes) const override {
    *planes = planes_;
    return absl::OkStatus();
  }

  absl::Status WritePlanes(uint32_t src_stride, const std::vector<uint32_t>& planes) override {
    const size_t count = heads_ * kernels::ScissorhandsWords(window_);
    if (src_stride > stride_ || planes.size() != count * src_stride) {
      return absl::InvalidArgumentError("scissorhands rings: planes of another shape");
    }
    std::fill(planes_.begin(), planes_.end(), 0u);
    for (size_t plane = 0; plane < count && src_stride > 0; ++plane) {
      std::copy_n(planes.begin() + plane * src_stride, src_stride, planes_.begin() + plane * stride_);
    }
    return absl::OkStatus();
  }

 private:
  // The view whose head 0 is `first_lh`.
  kernels::ScissorhandsHistory History(uint32_t first_lh) {
    return {planes_.data() + first_lh * words_per_head(stride_), window_, stride_};
  }

  std::vector<uint32_t> planes_;
};

}  // namespace

std::unique_ptr<ScissorhandsRings> NewCpuScissorhandsRings(size_t heads, uint32_t window) {
  return std::make_unique<CpuRings>(heads, window);
}

}  // namespace kvwarden
