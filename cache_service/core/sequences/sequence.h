#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cache_service/core/ids.h"
#include "cache_service/core/memory/page_pool.h"
#include "cache_service/core/sequences/retention_policy.h"
#include "cache_service/core/sequences/retention_state.h"
#include "cache_service/core/sequences/slot_map.h"

namespace kvwarden {

// One request's KV: per layer a page table, per (layer, head) the positions of its live
// slots. Owned by SequenceTable; fields above `mu` are immutable after insertion.
struct Sequence {
  SequenceId id = 0;
  TenantId tenant = kNoTenant;
  LeaseId lease = 0;
  PagePool* pool = nullptr;
  uint32_t max_tokens = 0;
  SequenceId parent = 0;
  RetentionPolicy policy;
  absl::Time created;

  // Unix ms of the last reservation, write, read or statistics (for the idle-time
  // metric): atomic, as writes and reads hold `mu` shared.
  mutable std::atomic<int64_t> last_active_ms{0};
  void Touch(absl::Time now) const {
    last_active_ms.store(absl::ToUnixMillis(now), std::memory_order_relaxed);
  }

  mutable absl::Mutex mu;
  bool released ABSL_GUARDED_BY(mu) = false;
  // Non-empty once a device failure left this sequence's bytes in an unknown state (a
  // compaction that may have moved them): every read is refused with DATA_LOSS and this
  // reason, never answered with bytes that may disagree with the slot maps.
  std::string kv_lost ABSL_GUARDED_BY(mu);
  // Grows whenever retention changes which slots are live.
  uint64_t epoch ABSL_GUARDED_BY(mu) = 0;
  // Token positions handed out so far.
  uint32_t num_tokens ABSL_GUARDED_BY(mu) = 0;
  std::vector<std::vector<PageId>> pages ABSL_GUARDED_BY(mu);  // [layer]
  std::vector<SlotMap> slots ABSL_GUARDED_BY(mu);              // [layer * heads + head]
  std::vector<uint32_t> evicted ABSL_GUARDED_BY(mu);           // [layer * heads + head]
  // When each position was reserved (Unix ms): token lifetimes at eviction.
  std::vector<int64_t> reserved_at_ms ABSL_GUARDED_BY(mu);
  // The policy's own per-sequence state (null for policies without one).
  std::unique_ptr<RetentionState> retention ABSL_GUARDED_BY(mu);
  // The last retention change as a slot map, so statistics computed one epoch back can be
  // remapped: for each (layer, head) it changed, the live count before and the kept
  // slots. Valid for the step from epoch map_epoch - 1 to map_epoch.
  struct SlotRemap {
    uint32_t old_size = 0;
    std::vector<uint32_t> kept;
  };
  std::vector<std::optional<SlotRemap>> last_remap ABSL_GUARDED_BY(mu);  // [layer * heads + head]
  uint64_t remap_epoch ABSL_GUARDED_BY(mu) = 0;                          // 0: none

  // Transfer leases holding this sequence's pages, all and writing ones. Compaction and
  // forks do not run while they do: the table answers TransferBusyError instead of
  // waiting on another client (the RPC layer parks the call, see ParkedCalls). They end
  // at the latest at lease expiry.
  uint32_t transfers ABSL_GUARDED_BY(mu) = 0;
  uint32_t write_transfers ABSL_GUARDED_BY(mu) = 0;
  // Set while a migration's transfer lease holds it (SequenceTable::BeginMigration):
  // reservations wait (TransferBusyError), writes are refused (MigratingError).
  bool migrating ABSL_GUARDED_BY(mu) = false;
  bool TransfersBusy(bool writes_only) const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    return (writes_only ? write_transfers : transfers) != 0;
  }

  // Memory pressure: a cap on every layer's budget (0 = none) and why it was set.
  uint32_t pressure_budget ABSL_GUARDED_BY(mu) = 0;
  std::string pressure_note ABSL_GUARDED_BY(mu);

  // The budget in force for `layer`: the policy's, tightened by memory pressure.
  uint32_t Budget(uint32_t layer) const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    const uint32_t b = policy.LayerBudget(layer, max_tokens);
    return pressure_budget != 0 && pressure_budget < b ? pressure_budget : b;
  }

  const KvLayout& layout() const { return pool->layout(); }
  // The fullest layer's LayerSlots.
  uint32_t FullestLayerSlots() const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    uint32_t n = 0;
    for (uint32_t layer = 0; layer < layout().num_layers; ++layer)
      n = std::max(n, LayerSlots(layer));
    return n;
  }
  // Slots the layer's page table must cover: the fullest head's count.
  uint32_t LayerSlots(uint32_t layer) const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    uint32_t n = 0;
    const uint32_t h = layout().num_kv_heads;
    for (uint32_t i = 0; i < h; ++i) n = std::max(n, slots[layer * h + i].size());
    return n;
  }
};

}  // namespace kvwarden
