#include "cache_service/retention/scissorhands/scissorhands_strategy.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/core/sequences/sequence_compaction.h"
#include "cache_service/retention/decode_steps.h"
#include "cache_service/util/log.h"
#include "common/codec/checked_record.h"

namespace kvwarden {
namespace {

ScissorhandsState& StateOf(Sequence& seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(seq.mu) {
  return static_cast<ScissorhandsState&>(*seq.retention);
}

const ScissorhandsPolicyParams& ParamsOf(const Sequence& seq) {
  return seq.policy.Params<ScissorhandsPolicyParams>();
}

constexpr char kStateTag[] = "SHRS";
constexpr uint32_t kStateVersion = 1;

// Dense mode: turns each full row into the sparse list (attention >= scale / attended), with
// `attended` the slots the worker's step saw, exactly as a worker would before sending.
void ListDenseRows(std::vector<DecodeStepStats>& steps, float threshold_scale) {
  for (DecodeStepStats& step : steps) {
    for (HeadStepStats& hs : step.heads) {
      if (hs.dense.empty()) continue;
      const float threshold = threshold_scale / static_cast<float>(hs.attended);
      for (uint32_t j = 0; j < hs.dense.size(); ++j) {
        if (!(hs.dense[j] < threshold)) hs.listed.push_back(j);
      }
      hs.dense.clear();
    }
  }
}

// Appends one step's attended counts and listed ids (views of the step's own vectors),
// (layer, head) by (layer, head), to the arrays ScissorhandsRings::Record takes.
void AppendStep(const DecodeStepStats& step, uint32_t heads, size_t lhs,
                std::vector<uint32_t>* attended, std::vector<kernels::ListedIds>* listed) {
  std::vector<const HeadStepStats*> by_lh(lhs, nullptr);
  for (const HeadStepStats& hs : step.heads) by_lh[size_t{hs.layer} * heads + hs.head] = &hs;
  for (size_t lh = 0; lh < lhs; ++lh) {
    attended->push_back(by_lh[lh]->attended);
    listed->push_back({by_lh[lh]->listed.data(), static_cast<uint32_t>(by_lh[lh]->listed.size())});
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<RetentionState>> ScissorhandsState::Clone() const {
  absl::StatusOr<std::unique_ptr<ScissorhandsRings>> rings = rings_->Clone();
  if (!rings.ok()) return rings.status();
  auto copy = std::make_unique<ScissorhandsState>(*std::move(rings));
  copy->decode_steps_ = decode_steps_;
  return std::unique_ptr<RetentionState>(std::move(copy));
}

void ScissorhandsState::Compacted(const std::vector<HeadCompaction>& heads) {
  if (absl::Status s = rings_->Compact(heads); !s.ok()) {
    // The slots moved already; stale bits only bias later evictions of these heads.
    LogEvent(LogLevel::kError, "history_compaction_failed")
        .Field("head_index", heads.empty() ? 0 : heads.front().lh)
        .Field("heads", heads.size())
        .Field("error", s.ToString());
  }
}

std::vector<std::vector<HeadFigure>> ScissorhandsState::Describe(
    const std::vector<uint32_t>& live) const {
  std::vector<std::vector<HeadFigure>> out(live.size());
  std::vector<uint32_t> counts;
  for (size_t lh = 0; lh < live.size(); ++lh) {
    uint32_t max = 0;
    uint64_t total = 0;
    if (live[lh] > 0 && rings_->LowCounts(static_cast<uint32_t>(lh), live[lh], &counts).ok()) {
      for (uint32_t c : counts) {
        max = std::max(max, c);
        total += c;
      }
    }
    const double mean = live[lh] > 0 ? static_cast<double>(total) / live[lh] : 0;
    out[lh] = {{"low_max", static_cast<double>(max)}, {"low_mean", mean}};
  }
  return out;
}

absl::StatusOr<std::string> ScissorhandsState::Encode() const {
  std::vector<uint32_t> planes;
  if (absl::Status s = rings_->ReadPlanes(&planes); !s.ok()) return s;
  RecordWriter w(kStateTag, kStateVersion);
  w.U64(rings_->heads());
  w.U32(rings_->window());
  w.U64(decode_steps_);
  w.U32(rings_->stride());
  w.U32s(planes);
  return std::move(w).Finish();
}

const ScissorhandsStrategy& ScissorhandsStrategy::Get() {
  static const ScissorhandsStrategy strategy;
  return strategy;
}

absl::StatusOr<std::unique_ptr<RetentionState>> ScissorhandsStrategy::NewState(
    const RetentionPolicy& policy, size_t head_count, PoolDevice& device) const {
  absl::StatusOr<std::unique_ptr<ScissorhandsRings>> rings = NewScissorhandsRings(
      device, head_count, policy.Params<ScissorhandsPolicyParams>().kernel.window);
  if (!rings.ok()) return rings.status();
  return std::unique_ptr<RetentionState>(std::make_unique<ScissorhandsState>(*std::move(rings)));
}

absl::StatusOr<std::unique_ptr<RetentionState>> ScissorhandsStrategy::DecodeState(
    const RetentionPolicy& policy, size_t head_count, PoolDevice& device,
    absl::string_view bytes) const {
  absl::StatusOr<RecordReader> r =
      RecordReader::Open(bytes, kStateTag, kStateVersion, "scissorhands state");
  if (!r.ok()) return r.status();
  const uint32_t window = policy.Params<ScissorhandsPolicyParams>().kernel.window;
  uint64_t heads = 0, steps = 0;
  uint32_t stored_window = 0, stride = 0;
  std::vector<uint32_t> planes;
  r->U64(&heads);
  r->U32(&stored_window);
  r->U64(&steps);
  r->U32(&stride);
  // The planes' size follows from the shape: a record cannot make the reader allocate more.
  const uint64_t expected = uint64_t{head_count} * kernels::ScissorhandsWords(window) * stride;
  r->U32s(&planes, expected);
  if (absl::Status s = r->Done(); !s.ok()) return s;
  if (heads != head_count || stored_window != window || planes.size() != expected) {
    return absl::DataLossError(
        absl::StrFormat("scissorhands state: %d heads, window %u, %d plane words; the sequence "
                        "needs %d heads, window %u, %d words",
                        heads, stored_window, planes.size(), head_count, window, expected));
  }
  absl::StatusOr<std::unique_ptr<ScissorhandsRings>> rings =
      NewScissorhandsRings(device, head_count, window);
  if (!rings.ok()) return rings.status();
  if (stride > 0) {
    if (absl::Status s = (*rings)->Reserve(stride); !s.ok()) return s;
    if (absl::Status s = (*rings)->WritePlanes(stride, planes); !s.ok()) return s;
  }
  auto state = std::make_unique<ScissorhandsState>(*std::move(rings));
  state->CountSteps(steps);
  return std::unique_ptr<RetentionState>(std::move(state));
}

absl::Status ScissorhandsStrategy::ApplyStats(Sequence& seq, StatsBatch& batch, bool one_back,
                                              RetentionResult* out) const {
  if (absl::Status s = RefuseOtherStats(seq, batch, true, false); !s.ok()) return s;
  if (absl::Status s = ValidateDecodeSteps(seq, batch.steps, one_back); !s.ok()) return s;
  ListDenseRows(batch.steps, ParamsOf(seq).threshold_scale);
  if (one_back) RemapOneBack(seq, batch.steps);
  ScissorhandsState& state = StateOf(seq);
  const uint32_t heads = seq.layout().num_kv_heads;
  std::vector<uint32_t> attended;
  std::vector<kernels::ListedIds> listed;
  auto record = [&](size_t first, size_t end, const std::vector<uint32_t>& live) -> absl::Status {
    attended.clear();
    listed.clear();
    for (size_t t = first; t < end; ++t)
      AppendStep(batch.steps[t], heads, live.size(), &attended, &listed);
    // No slot anywhere yet: nothing to record (the rings hold no planes).
    if (state.rings().stride() > 0) {
      if (absl::Status st = state.rings().Record(
              state.decode_steps(), static_cast<uint32_t>(end - first), live, attended, listed);
          !st.ok()) {
        return st;
      }
    }
    state.CountSteps(end - first);
    return absl::OkStatus();
  };
  auto select = [&](uint32_t layer, const std::vector<uint32_t>& layer_live, uint32_t budget,
                    std::vector<uint8_t>* keep) {
    kernels::ScissorhandsParams p = ParamsOf(seq).kernel;
    p.budget = budget;
    return state.rings().Select(layer * heads, layer_live, p, keep);
  };
  return ApplyDecodeSteps(seq, batch.steps, {record, select}, out);
}

std::vector<uint32_t> ScissorhandsStrategy::SqueezeKept(Sequence& seq, size_t lh, uint32_t live,
                                                        uint32_t budget) const {
  kernels::ScissorhandsParams p = ParamsOf(seq).kernel;
  p.budget = budget;
  p.drop = 1;  // squeezed exactly to the budget (live - B evictions), not by the drop amount m
  std::vector<uint8_t> keep;
  if (!StateOf(seq).rings().Select(static_cast<uint32_t>(lh), {live}, p, &keep).ok()) {
    keep.assign(live, 1);  // a selection that fails squeezes nothing
  }
  return KeptSlots(keep);
}

}  // namespace kvwarden
