#include "cache_service/core/sequences/sequence_compaction.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cache_service/util/log.h"

namespace kvwarden {

void CompactLayer(Sequence& seq, uint32_t layer, const std::vector<std::vector<uint32_t>>& kept,
                  RetentionResult* out) {
  const KvLayout& l = seq.layout();
  const uint32_t heads = l.num_kv_heads;
  std::vector<uint8_t*> ptrs;
  for (PageId p : seq.pages[layer]) ptrs.push_back(seq.pool->PageData(p));
  std::vector<uint32_t> offsets = {0}, flat;
  uint32_t extent = 0;
  for (uint32_t h = 0; h < heads; ++h) {
    flat.insert(flat.end(), kept[h].begin(), kept[h].end());
    offsets.push_back(static_cast<uint32_t>(flat.size()));
    extent = std::max<uint32_t>(extent, kept[h].size());
  }
  if (absl::Status s = seq.pool->device_ops().Compact(l.geometry(), ptrs, offsets, flat); !s.ok()) {
    // Only a device failure gets here. Refused before anything ran: the slot maps still
    // match the unmoved bytes. DATA_LOSS: the moves may have run in part, so no slot map
    // can be trusted to match the bytes; the sequence refuses every read from now on.
    LogEvent(LogLevel::kError, "compaction_failed")
        .Field("sequence", seq.id)
        .Field("layer", layer)
        .Field("error", s.ToString())
        .Field("kv_lost", absl::IsDataLoss(s));
    if (absl::IsDataLoss(s) && seq.kv_lost.empty()) {
      seq.kv_lost = absl::StrCat("sequence ", seq.id, ": a device error during compaction of layer ",
                                 layer, " left its KV in an unknown state (", s.message(),
                                 "); release it and recompute");
    }
    return;
  }
  std::vector<HeadCompaction> changed;
  for (uint32_t h = 0; h < heads; ++h) {
    const size_t lh = size_t{layer} * heads + h;
    SlotMap& map = seq.slots[lh];
    const uint32_t n = map.size(), k = static_cast<uint32_t>(kept[h].size());
    if (k == n) continue;
    if (seq.remap_epoch != seq.epoch + 1) {  // first change towards the next epoch
      seq.last_remap.assign(seq.slots.size(), std::nullopt);
      seq.remap_epoch = seq.epoch + 1;
    }
    seq.last_remap[lh] = Sequence::SlotRemap{n, kept[h]};
    HeadRetention change{layer, h, k, {}};
    for (uint32_t j = 0, i = 0; j < n; ++j) {
      if (i < k && kept[h][i] == j) {
        ++i;
      } else {
        change.evicted_positions.push_back(map.position(j));
      }
    }
    map.Retain(kept[h]);
    seq.evicted[lh] += n - k;
    changed.push_back({static_cast<uint32_t>(lh), &kept[h], n});
    out->changes.push_back(std::move(change));
  }
  if (seq.retention != nullptr && !changed.empty()) seq.retention->Compacted(changed);
  // Whole pages past the new extent go back (never shared: see Fork).
  auto& table = seq.pages[layer];
  const size_t keep_pages = (extent + l.page_tokens - 1) / l.page_tokens;
  if (table.size() > keep_pages) {
    std::vector<PageId> tail(table.begin() + keep_pages, table.end());
    table.resize(keep_pages);
    out->pages_freed += seq.pool->Unref(tail);
  }
}

}  // namespace kvwarden
