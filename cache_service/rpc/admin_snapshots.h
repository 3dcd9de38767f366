#pragma once

// The operator's view of the daemon, built in one place for AdminService's listings and
// the Prometheus exporter (cache_service/metrics), so a metric and `kvwctl` never differ.

#include "cache_service/rpc/service_context.h"
#include "kvwarden/v1/admin.pb.h"

namespace kvwarden {

// Every pool's pages and tenants, the process's fds and the gRPC connections.
void SnapshotPools(const ServiceContext& ctx, v1::ListPoolsResponse* out);
// Every tenant's quota, usage, sequences, workers and refusals.
void SnapshotTenants(const ServiceContext& ctx, v1::ListTenantsResponse* out);
// Same-host attach connections (none when attach is off).
void SnapshotAttachments(const ServiceContext& ctx, v1::ListAttachmentsResponse* out);

}  // namespace kvwarden
