#pragma once

#include <memory>

#include "cache_service/metrics/daemon_metrics.h"
#include "grpcpp/support/server_interceptor.h"

namespace kvwarden {

// Times every RPC from its start to its status (or its end without one: CANCELLED) into
// `metrics` (kvwarden_rpc_duration_seconds by method and code). `metrics` outlives the
// server.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewRpcMetricsInterceptorFactory(DaemonMetrics* metrics);

}  // namespace kvwarden
