#pragma once

// kvwardend's /metrics endpoint (MetricsHttp, one non-blocking thread): the
// event metrics of DaemonMetrics, and gauges read at scrape time from the same snapshots
// as the admin listings (rpc/admin_snapshots.h) — pool pages, tenants' usage and quotas,
// attachments, connections, the process's fds and threads. Labels are pools, tenants,
// policies, methods and codes: never sequence ids.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cache_service/metrics/daemon_metrics.h"
#include "cache_service/rpc/service_context.h"

namespace kvwarden {

class MetricsServer {
 public:
  // Serves on `address` (host:port; port 0 picks one). `events` and `ctx`'s parts must
  // outlive the server.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                              DaemonMetrics* events,
                                                              const ServiceContext& ctx);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // host:port it listens on (the port chosen when 0 was asked for).
  const std::string& address() const { return address_; }

 private:
  MetricsServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string address_;
};

}  // namespace kvwarden
