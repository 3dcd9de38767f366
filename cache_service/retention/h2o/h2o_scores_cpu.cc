#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cache_service/retention/h2o/h2o_scores.h"

namespace kvwarden {
namespace {

absl::Status KernelError(const char* what) {
  return absl::InternalError(absl::StrCat("h2o ", what, " kernel refused validated input"));
}

class CpuRows final : public H2oScoreRows {
 public:
  explicit CpuRows(size_t heads) : H2oScoreRows(heads) {}

  absl::StatusOr<std::unique_ptr<H2oScoreRows>> Clone() const override {
    return std::unique_ptr<H2oScoreRows>(new CpuRows(*this));
  }

  absl::Status Reserve(uint32_t slots) override {
    if (slots <= stride_) return absl::OkStatus();
    const uint32_t stride = GrownStride(slots);
    std::vector<float> grown(heads_ * stride, 0.0f);
    for (size_t h = 0; h < heads_ && stride_ > 0; ++h) {
      std::copy_n(rows_.begin() + h * stride_, stride_, grown.begin() + h * stride);
    }
    rows_ = std::move(grown);
    stride_ = stride;
    return absl::OkStatus();
  }

  absl::Status Accumulate(uint32_t num_steps, const std::vector<uint32_t>& row_offsets,
                          const std::vector<float>& attention) override {
    if (stride_ == 0) return absl::OkStatus();  // no slot yet
    if (kernels::H2oAccumulateCpu(Scores(0), static_cast<uint32_t>(heads_), num_steps, row_offsets.data(),
                                  attention.data()) != kernels::KernelStatus::kOk) {
      return KernelError("accumulate");
    }
    return absl::OkStatus();
  }

  absl::Status Select(uint32_t first_lh, const std::vector<uint32_t>& live, const kernels::H2oParams& p,
                      std::vector<uint8_t>* keep) override {
    const std::vector<uint32_t> offsets = SegmentOffsets(live);
    keep->assign(offsets.back(), 1);
    if (kernels::H2oSelectCpu({static_cast<uint32_t>(live.size()), offsets.data()}, Scores(first_lh), p,
                              keep->data()) != kernels::KernelStatus::kOk) {
      return KernelError("select");
    }
    return absl::OkStatus();
  }

  absl::Status Compact(const std::vector<HeadCompaction>& heads) override {
    for (const HeadCompaction& c : heads) {
      if (kernels::H2oCompactHeadCpu(Scores(0), c.lh, c.kept->data(), static_cast<uint32_t>(c.kept->size()),
                                     c.old_live) != kernels::KernelStatus::kOk) {
        return KernelError("compaction");
      }
    }
    return absl::OkStatus();
  }

  absl::Status ReadRows(std::vector<float>* rows) const override {
    *rows = rows_;
    return absl::OkStatus();
  }

  absl::Status WriteRows(uint32_t src_stride, const std::vector<float>& rows) override {
    if (src_stride > stride_ || rows.size() != heads_ * src_stride) {
      return absl::InvalidArgumentError("h2o scores: rows of another shape");
    }
    std::fill(rows_.begin(), rows_.end(), 0.0f);
    for (size_t h = 0; h < heads_ && src_stride > 0; ++h) {
      std::copy_n(rows.begin() + h * src_stride, src_stride, rows_.begin() + h * stride_);
    }
    return absl::OkStatus();
  }

 private:
  kernels::H2oScores Scores(uint32_t first_lh) { return {rows_.data() + size_t{first_lh} * stride_, stride_}; }

  std::vector<float> rows_;
};

}  // namespace

std::unique_ptr<H2oScoreRows> NewCpuH2oScoreRows(size_t heads) { return std::make_unique<CpuRows>(heads); }

}  // namespace kvwarden
