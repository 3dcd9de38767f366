#pragma once

// The daemon's event metrics (Prometheus, via prometheus-cpp): what the sequence table
// reports (TableEvents) and every RPC's latency by method and status code. Scrape-time
// gauges (pools, tenants, process) come from metrics_server.h. Thread-safe: every
// observation is a lock-free counter or histogram update once its series exists.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cache_service/core/sequences/table_events.h"

namespace prometheus {
class Registry;
}

namespace kvwarden {

class DaemonMetrics final : public TableEvents {
 public:
  // `pools`: the configured pools (their series exist from the start, at zero).
  explicit DaemonMetrics(const std::vector<std::string>& pools);
  ~DaemonMetrics() override;
  DaemonMetrics(const DaemonMetrics&) = delete;
  DaemonMetrics& operator=(const DaemonMetrics&) = delete;

  // One finished RPC: `method` is its full gRPC name ("/kvwarden.v1.ControlService/Ping");
  // names that are not kvwardend's own count as "other", so labels stay bounded.
  void ObserveRpc(const std::string& method, int code, double seconds);

  void Compressed(const RetentionStrategy& policy, RetentionCause cause,
                  absl::Span<const HeadRetention> changes, absl::Span<const int64_t> reserved_at_ms,
                  int64_t now_ms, absl::Duration took) override;
  void StatsApplied(uint64_t ids) override;
  void PressureTightened(const std::string& pool) override;
  // A migration ended here, as source (`out`) or target: its status and the page bytes
  // it moved (Migrations' on_result).
  void MigrationEnded(bool out, absl::StatusCode code, uint64_t bytes);
  void SequenceEnded(const RetentionStrategy& policy, SequenceEnd why, absl::Duration lifetime,
                     absl::Duration idle) override;
  void TransferBegun(bool write, uint64_t bytes) override;
  void TransferEnded(TransferEnd how) override;
  void KvBytes(bool write, uint64_t bytes) override;
  void LeaseLapsed() override;

  std::shared_ptr<prometheus::Registry> registry() const;

 private:
  struct Families;
  std::unique_ptr<Families> f_;
};

}  // namespace kvwarden
