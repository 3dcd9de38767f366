#include <algorithm>
#include <utility>
#include <vector>

#include "kernels/scissorhands.h"

namespace kvwarden::kernels {

KernelStatus ScissorhandsRecordStepCpu(Segments slots, ScissorhandsHistory history, uint64_t step,
                                       const uint32_t* attended, const uint32_t* listed_offsets,
                                       const uint32_t* listed_ids) {
  if (history.window == 0 || history.planes == nullptr || slots.offsets == nullptr || attended == nullptr) {
    return KernelStatus::kInvalidArgument;
  }
  const uint32_t bit = static_cast<uint32_t>(step % history.window);
  const uint32_t mask = 1u << (bit % 32);
  for (uint32_t h = 0; h < slots.num_heads; ++h) {
    // Bounds in locals: read through the pointers, they would be reloaded after every
    // store to the plane (same type, may alias), which kept the loops scalar.
    const uint32_t n = slots.size(h), att = attended[h];
    const uint32_t listed_begin = listed_offsets[h], listed_end = listed_offsets[h + 1];
    if (att > n || n > history.stride) return KernelStatus::kInvalidArgument;
    uint32_t* plane = history.plane(h, bit / 32);
    // Low unless listed; slots newer than the step have no say in it.
    for (uint32_t j = 0; j < att; ++j) plane[j] |= mask;
    for (uint32_t j = att; j < n; ++j) plane[j] &= ~mask;
    for (uint32_t i = listed_begin; i < listed_end; ++i) {
      const uint32_t id = listed_ids[i];
      if (id >= att) return KernelStatus::kInvalidArgument;
      plane[id] &= ~mask;
    }
  }
  return KernelStatus::kOk;
}

namespace {

// Steps' arguments fit the history: every head within the stride, attended within live,
// listed ids present and below attended. Checked whole before anything changes.
bool StepsFit(Segments slots, ScissorhandsHistory history, uint32_t num_steps,
              const uint32_t* attended, const ListedIds* listed) {
  if (history.window == 0 || slots.offsets == nullptr ||
      (num_steps > 0 && (attended == nullptr || listed == nullptr))) {
    return false;
  }
  const uint32_t heads = slots.num_heads;
  for (uint32_t h = 0; h < heads; ++h) {
    const uint32_t n = slots.size(h);
    if (n > history.stride) return false;
    for (uint32_t s = 0; s < num_steps; ++s) {
      const size_t at = size_t{s} * heads + h;
      const uint32_t att = attended[at];
      if (att > n || (listed[at].count > 0 && listed[at].ids == nullptr)) return false;
      for (uint32_t i = 0; i < listed[at].count; ++i) {
        if (listed[at].ids[i] >= att) return false;
      }
    }
  }
  return true;
}

}  // namespace

KernelStatus ScissorhandsRecordStepsCpu(Segments slots, ScissorhandsHistory history,
                                        uint64_t first_step, uint32_t num_steps,
                                        const uint32_t* attended, const ListedIds* listed) {
  if (history.planes == nullptr || !StepsFit(slots, history, num_steps, attended, listed)) {
    return KernelStatus::kInvalidArgument;
  }
  const uint32_t heads = slots.num_heads;
  auto bit = [&](uint32_t s) { return static_cast<uint32_t>((first_step + s) % history.window); };
  std::vector<std::pair<uint32_t, uint32_t>> bounds;  // (attended, the step's bit mask)
  for (uint32_t g = 0; g < num_steps;) {
    // A group: consecutive steps on one plane word, fewer than `window` (distinct bits).
    const uint32_t word = bit(g) / 32;
    uint32_t g_end = g + 1;
    while (g_end < num_steps && g_end - g < history.window && bit(g_end) / 32 == word) ++g_end;
    for (uint32_t h = 0; h < heads; ++h) {
      const uint32_t n = slots.size(h);
      uint32_t* plane = history.plane(h, word);
      // Slot j's bit of step s is set iff j < attended (low unless listed), so between
      // consecutive attended counts the group's bits take one value: plane[j] =
      // (plane[j] & ~all) | set, `set` losing a step's bit past its attended count.
      bounds.clear();
      uint32_t all = 0;
      for (uint32_t s = g; s < g_end; ++s) {
        const uint32_t mask = 1u << (bit(s) % 32);
        all |= mask;
        bounds.emplace_back(attended[size_t{s} * heads + h], mask);
      }
      std::sort(bounds.begin(), bounds.end());
      uint32_t set = all, from = 0;
      for (const auto& [att, mask] : bounds) {
        for (uint32_t j = from; j < att; ++j) plane[j] = (plane[j] & ~all) | set;
        set &= ~mask;
        from = std::max(from, att);
      }
      for (uint32_t j = from; j < n; ++j) plane[j] &= ~all;
      for (uint32_t s = g; s < g_end; ++s) {
        const uint32_t mask = 1u << (bit(s) % 32);
        const ListedIds ids = listed[size_t{s} * heads + h];
        for (uint32_t i = 0; i < ids.count; ++i) plane[ids.ids[i]] &= ~mask;
      }
    }
    g = g_end;
  }
  return KernelStatus::kOk;
}

KernelStatus AppendScissorhandsRecordSteps(Segments slots, ScissorhandsHistory history,
                                           uint64_t first_step, uint32_t num_steps,
                                           const uint32_t* attended, const ListedIds* listed,
                                           ScissorhandsRecordBatch* batch) {
  if (!StepsFit(slots, history, num_steps, attended, listed)) return KernelStatus::kInvalidArgument;
  const uint32_t heads = slots.num_heads;
  for (uint32_t h = 0; h < heads; ++h) {
    for (uint32_t s = 0; s < num_steps; ++s) {
      const size_t at = size_t{s} * heads + h;
      const uint32_t bit = static_cast<uint32_t>((first_step + s) % history.window);
      const uint32_t begin = static_cast<uint32_t>(batch->ids.size());
      batch->ids.insert(batch->ids.end(), listed[at].ids, listed[at].ids + listed[at].count);
      batch->heads.push_back({history.plane(h, bit / 32), 1u << (bit % 32), slots.size(h),
                              attended[at], begin, static_cast<uint32_t>(batch->ids.size())});
    }
    if (num_steps > 0) batch->group_ends.push_back(static_cast<uint32_t>(batch->heads.size()));
  }
  return KernelStatus::kOk;
}

void AppendScissorhandsRecordBatch(const ScissorhandsRecordBatch& from,
                                   ScissorhandsRecordBatch* to) {
  const uint32_t head_base = static_cast<uint32_t>(to->heads.size());
  const uint32_t id_base = static_cast<uint32_t>(to->ids.size());
  for (ScissorhandsRecordHead h : from.heads) {
    h.listed_begin += id_base;
    h.listed_end += id_base;
    to->heads.push_back(h);
  }
  for (uint32_t end : from.group_ends) to->group_ends.push_back(head_base + end);
  to->ids.insert(to->ids.end(), from.ids.begin(), from.ids.end());
}

KernelStatus ScissorhandsRecordBatchCpu(const ScissorhandsRecordBatch& batch) {
  uint32_t begin = 0;
  for (const uint32_t end : batch.group_ends) {
    if (end < begin || end > batch.heads.size()) return KernelStatus::kInvalidArgument;
    for (uint32_t i = begin; i < end; ++i) {
      const ScissorhandsRecordHead h =
          batch.heads[i];  // a copy: stores to the plane cannot alias it
      if (h.listed_end < h.listed_begin || h.listed_end > batch.ids.size())
        return KernelStatus::kInvalidArgument;
      for (uint32_t j = 0; j < h.live; ++j) {
        h.plane[j] = j < h.attended ? (h.plane[j] | h.mask) : (h.plane[j] & ~h.mask);
      }
      for (uint32_t k = h.listed_begin; k < h.listed_end; ++k) {
        if (batch.ids[k] < h.attended) h.plane[batch.ids[k]] &= ~h.mask;
      }
    }
    begin = end;
  }
  return KernelStatus::kOk;
}

// Counting the low bits is most of the work: with the popcnt instruction where the CPU
// has it (chosen at load time), a bit-twiddling fallback elsewhere.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("popcnt", "default")))
#endif
KernelStatus ScissorhandsSelectCpu(Segments slots, ScissorhandsHistory history, ScissorhandsParams p,
                                   uint8_t* keep, uint32_t* low_counts) {
  if (p.window == 0 || p.window > kScissorhandsMaxWindow || p.window != history.window ||
      !ScissorhandsProtectedFit(p) ||
      keep == nullptr || history.planes == nullptr) {
    return KernelStatus::kInvalidArgument;
  }
  // The CUDA kernel's selection, so both agree by construction: a histogram of the
  // candidates' low counts gives the count T of the last evicted slot; every candidate
  // above T goes, and the oldest ones at T. Equal to a stable sort by count, descending,
  // taking the first `evict`, in O(n + window) instead of O(n log n).
  std::vector<uint32_t> low, hist(p.window + 1);
  for (uint32_t h = 0; h < slots.num_heads; ++h) {
    const uint32_t base = slots.begin(h), n = slots.size(h);
    if (n > history.stride) return KernelStatus::kInvalidArgument;
    low.assign(n, 0);
    for (uint32_t w = 0; w < history.words(); ++w) {
      const uint32_t* plane = history.plane(h, w);
      for (uint32_t j = 0; j < n; ++j) low[j] += PopCount32(plane[j]);
    }
    for (uint32_t j = 0; j < n; ++j) {
      if (low_counts != nullptr) low_counts[base + j] = low[j];
      keep[base + j] = 1;
    }
    const uint32_t evict = ScissorhandsEvictCount(n, p);
    if (evict == 0) continue;
    // Candidates [sinks, n - recent).
    const uint32_t lo = p.sinks, hi = n - p.recent;
    std::fill(hist.begin(), hist.end(), 0u);
    for (uint32_t j = lo; j < hi; ++j) ++hist[std::min(low[j], p.window)];
    uint32_t above = 0, t = p.window;
    while (above + hist[t] < evict) above += hist[t--];
    uint32_t take_at_t = evict - above;
    for (uint32_t j = lo; j < hi; ++j) {
      const uint32_t c = std::min(low[j], p.window);
      if (c > t) {
        keep[base + j] = 0;
      } else if (c == t && take_at_t > 0) {
        keep[base + j] = 0;
        --take_at_t;
      }
    }
  }
  return KernelStatus::kOk;
}

KernelStatus ScissorhandsCompactHeadCpu(ScissorhandsHistory history, uint32_t head, const uint32_t* kept,
                                        uint32_t k, uint32_t old_live) {
  if (history.planes == nullptr || history.window == 0 || k > old_live || old_live > history.stride ||
      (k > 0 && kept == nullptr)) {
    return KernelStatus::kInvalidArgument;
  }
  for (uint32_t i = 0; i < k; ++i) {
    if (kept[i] >= old_live || (i > 0 && kept[i] <= kept[i - 1])) return KernelStatus::kInvalidArgument;
  }
  for (uint32_t w = 0; w < history.words(); ++w) {
    uint32_t* plane = history.plane(head, w);
    // kept is ascending, so kept[i] >= i: a forward pass reads each source before it is overwritten.
    for (uint32_t i = 0; i < k; ++i) plane[i] = plane[kept[i]];
    std::fill(plane + k, plane + old_live, 0u);
  }
  return KernelStatus::kOk;
}

}  // namespace kvwarden::kernels
