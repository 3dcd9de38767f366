#include "cache_service/retention/h2o/h2o_strategy.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "cache_service/retention/decode_steps.h"
#include "cache_service/util/log.h"
#include "common/codec/checked_record.h"

namespace kvwarden {
namespace {

constexpr char kStateTag[] = "H2OS";
constexpr uint32_t kStateVersion = 1;

H2oState& StateOf(Sequence& seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu) {
  return static_cast<H2oState&>(*seq.retention);
}

const kernels::H2oParams& ParamsOf(const Sequence& seq) {
  return seq.policy.Params<H2oPolicyParams>().kernel;
}

// H2O sums attention values: a step must carry them (dense rows), not just the ids above a
// threshold.
absl::Status RequireDenseRows(const std::vector<DecodeStepStats>& steps) {
  for (size_t s = 0; s < steps.size(); ++s) {
    for (const HeadStepStats& hs : steps[s].heads) {
      if (hs.attended > 0 && hs.dense.empty()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("steps[%d]: layer %u head %u: h2o takes dense attention rows "
                            "(attention values), not listed ids",
                            s, hs.layer, hs.head));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RetentionState>> H2oState::Clone() const {
  absl::StatusOr<std::unique_ptr<H2oScoreRows>> rows = rows_->Clone();
  if (!rows.ok()) return rows.status();
  auto copy = std::make_unique<H2oState>(*std::move(rows));
  copy->decode_steps_ = decode_steps_;
  return std::unique_ptr<RetentionState>(std::move(copy));
}

void H2oState::Compacted(const std::vector<HeadCompaction>& heads) {
  if (absl::Status s = rows_->Compact(heads); !s.ok()) {
    // The slots moved already; stale sums only bias later evictions of these heads.
    LogEvent(LogLevel::kError, "h2o_compaction_failed")
        .Field("head_index", heads.empty() ? 0 : heads.front().lh)
        .Field("error", s.ToString());
  }
}

std::vector<std::vector<HeadFigure>> H2oState::Describe(const std::vector<uint32_t>& live) const {
  std::vector<float> rows;
  if (!rows_->ReadRows(&rows).ok()) return {};
  const uint32_t stride = rows_->stride();
  std::vector<std::vector<HeadFigure>> out(live.size());
  for (size_t lh = 0; lh < live.size() && lh < rows_->heads(); ++lh) {
    const uint32_t n = std::min(live[lh], stride);
    double max = 0, total = 0;
    for (uint32_t j = 0; j < n; ++j) {
      const double v = rows[lh * stride + j];
      max = std::max(max, v);
      total += v;
    }
    out[lh] = {{"score_max", max}, {"score_mean", n > 0 ? total / n : 0}};
  }
  return out;
}

absl::StatusOr<std::string> H2oState::Encode() const {
  std::vector<float> rows;
  if (absl::Status s = rows_->ReadRows(&rows); !s.ok()) return s;
  std::vector<uint32_t> bits(rows.size());
  if (!rows.empty()) std::memcpy(bits.data(), rows.data(), rows.size() * 4);
  RecordWriter w(kStateTag, kStateVersion);
  w.U64(rows_->heads());
  w.U64(decode_steps_);
  w.U32(rows_->stride());
  w.U32s(bits);
  return std::move(w).Finish();
}

const H2oStrategy& H2oStrategy::Get() {
  static const H2oStrategy strategy;
  return strategy;
}

absl::StatusOr<std::unique_ptr<RetentionState>> H2oStrategy::NewState(const RetentionPolicy&,
                                                                      size_t head_count,
                                                                      PoolDevice& device) const {
  absl::StatusOr<std::unique_ptr<H2oScoreRows>> rows = NewH2oScoreRows(device, head_count);
  if (!rows.ok()) return rows.status();
  return std::unique_ptr<RetentionState>(std::make_unique<H2oState>(*std::move(rows)));
}

absl::StatusOr<std::unique_ptr<RetentionState>> H2oStrategy::DecodeState(
    const RetentionPolicy&, size_t head_count, PoolDevice& device, absl::string_view bytes) const {
  absl::StatusOr<RecordReader> r = RecordReader::Open(bytes, kStateTag, kStateVersion, "h2o state");
  if (!r.ok()) return r.status();
  uint64_t heads = 0, steps = 0;
  uint32_t stride = 0;
  std::vector<uint32_t> bits;
  r->U64(&heads);
  r->U64(&steps);
  r->U32(&stride);
  const uint64_t expected = uint64_t{head_count} * stride;
  r->U32s(&bits, expected);
  if (absl::Status s = r->Done(); !s.ok()) return s;
  if (heads != head_count || bits.size() != expected) {
    return absl::DataLossError(
        absl::StrFormat("h2o state: %d heads, %d values; the sequence needs %d heads, %d values",
                        heads, bits.size(), head_count, expected));
  }
  std::vector<float> rows(bits.size());
  if (!bits.empty()) std::memcpy(rows.data(), bits.data(), bits.size() * 4);
  for (float x : rows) {
    if (!std::isfinite(x) || x < 0)
      return absl::DataLossError("h2o state: a sum that is not a finite value >= 0");
  }
  absl::StatusOr<std::unique_ptr<H2oScoreRows>> made = NewH2oScoreRows(device, head_count);
  if (!made.ok()) return made.status();
  if (stride > 0) {
    if (absl::Status s = (*made)->Reserve(stride); !s.ok()) return s;
    if (absl::Status s = (*made)->WriteRows(stride, rows); !s.ok()) return s;
  }
  auto state = std::make_unique<H2oState>(*std::move(made));
  state->CountSteps(steps);
  return std::unique_ptr<RetentionState>(std::move(state));
}

absl::Status H2oStrategy::ApplyStats(Sequence& seq, StatsBatch& batch, bool one_back,
                                     RetentionResult* out) const {
  if (absl::Status s = RefuseOtherStats(seq, batch, true, false); !s.ok()) return s;
  if (absl::Status s = ValidateDecodeSteps(seq, batch.steps, one_back); !s.ok()) return s;
  if (absl::Status s = RequireDenseRows(batch.steps); !s.ok()) return s;
  if (one_back) RemapOneBack(seq, batch.steps);
  H2oState& state = StateOf(seq);
  const uint32_t heads = seq.layout().num_kv_heads;
  std::vector<uint32_t> offsets;
  std::vector<float> attention;
  std::vector<const HeadStepStats*> by_lh;
  auto record = [&](size_t first, size_t end, const std::vector<uint32_t>& live) -> absl::Status {
    offsets.assign(1, 0);
    attention.clear();
    for (size_t t = first; t < end; ++t) {
      by_lh.assign(live.size(), nullptr);
      for (const HeadStepStats& hs : batch.steps[t].heads)
        by_lh[size_t{hs.layer} * heads + hs.head] = &hs;
      for (const HeadStepStats* hs : by_lh) {
        attention.insert(attention.end(), hs->dense.begin(), hs->dense.end());
        offsets.push_back(static_cast<uint32_t>(attention.size()));
      }
    }
    if (absl::Status st =
            state.rows().Accumulate(static_cast<uint32_t>(end - first), offsets, attention);
        !st.ok()) {
      return st;
    }
    state.CountSteps(end - first);
    return absl::OkStatus();
  };
  auto select = [&](uint32_t layer, const std::vector<uint32_t>& layer_live, uint32_t budget,
                    std::vector<uint8_t>* keep) {
    kernels::H2oParams p = ParamsOf(seq);
    p.budget = budget;
    return state.rows().Select(layer * heads, layer_live, p, keep);
  };
  return ApplyDecodeSteps(seq, batch.steps, {record, select}, out);
}

std::vector<uint32_t> H2oStrategy::SqueezeKept(Sequence& seq, size_t lh, uint32_t live,
                                               uint32_t budget) const {
  kernels::H2oParams p = ParamsOf(seq);
  p.budget = budget;
  p.drop = 1;  // squeezed exactly to the budget
  std::vector<uint8_t> keep;
  if (!StateOf(seq).rows().Select(static_cast<uint32_t>(lh), {live}, p, &keep).ok()) {
    keep.assign(live, 1);  // a selection that fails squeezes nothing
  }
  return KeptSlots(keep);
}

}  // namespace kvwarden
