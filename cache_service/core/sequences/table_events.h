#pragma once

// What the sequence table reports as it happens, for the daemon's metrics
// (cache_service/metrics). Calls come from RPC threads, some under a sequence's lock: an
// observer only counts (atomics, no allocation per token), never blocks or calls back.

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "absl/types/span.h"
#include "cache_service/core/sequences/retention_policy.h"
#include "cache_service/core/sequences/stats_batch.h"

namespace kvwarden {

// How a sequence ended: its worker released it, or its worker lease ended (lapse or
// ReleaseWorker).
enum class SequenceEnd { kReleased, kLeaseEnded, kMigrated };
// How a transfer lease ended: EndTransfer, its TTL, or its worker lease (or the daemon) ending.
enum class TransferEnd { kCompleted, kExpired, kLeaseEnded };

class TableEvents {
 public:
  virtual ~TableEvents() = default;
  // One compression of a `policy` sequence: `changes` lists the evicted positions per
  // (layer, head); reserved_at_ms[p] is when position p was reserved (Unix ms), now_ms
  // the eviction; the compression took `took`.
  virtual void Compressed(const RetentionStrategy& /*policy*/, RetentionCause /*cause*/,
                          absl::Span<const HeadRetention> /*changes*/,
                          absl::Span<const int64_t> /*reserved_at_ms*/, int64_t /*now_ms*/,
                          absl::Duration /*took*/) {}
  // One StreamStats message applied, carrying `ids` listed slot ids (or dense values).
  virtual void StatsApplied(uint64_t /*ids*/) {}
  // Memory pressure tightened one sequence's budget on `pool`.
  virtual void PressureTightened(const std::string& /*pool*/) {}
  // A sequence went after `lifetime`, `idle` since its last reservation, write, read or
  // statistics.
  virtual void SequenceEnded(const RetentionStrategy& /*policy*/, SequenceEnd /*why*/,
                             absl::Duration /*lifetime*/, absl::Duration /*idle*/) {}
  // A transfer lease pinned `bytes` of pages for a write (or a read).
  virtual void TransferBegun(bool /*write*/, uint64_t /*bytes*/) {}
  virtual void TransferEnded(TransferEnd /*how*/) {}
  // K/V bytes moved by WriteKV (write) or ReadKV over gRPC.
  virtual void KvBytes(bool /*write*/, uint64_t /*bytes*/) {}
  // A worker lease lapsed (its TTL passed without a keep-alive).
  virtual void LeaseLapsed() {}
};

// Reports nothing: the table's default.
TableEvents& NoTableEvents();

}  // namespace kvwarden
