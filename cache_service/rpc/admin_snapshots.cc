#include "cache_service/rpc/admin_snapshots.h"

#include "absl/container/flat_hash_map.h"
#include "cache_service/dataplane/attach_server.h"
#include "cache_service/rpc/grpc_acceptor.h"
#include "cache_service/rpc/proto_convert.h"
#include "cache_service/util/process_fds.h"

namespace kvwarden {

void SnapshotPools(const ServiceContext& ctx, v1::ListPoolsResponse* out) {
  for (const PagePool* pool : ctx.pools->all()) ToProto(*pool, *ctx.ledger, out->add_pools());
  const ProcessFds fds = CountProcessFds();
  out->set_open_fds(fds.open);
  out->set_fd_limit(fds.limit);
  out->set_grpc_connections(ctx.grpc_connections->open.load());
  out->set_grpc_connection_limit(ctx.grpc_connections->limit.load());
  out->set_grpc_connections_refused(ctx.grpc_connections->refused.load());
  if (ctx.metrics_address != nullptr) out->set_metrics_address(*ctx.metrics_address);
}

void SnapshotTenants(const ServiceContext& ctx, v1::ListTenantsResponse* out) {
  // Counted by the table (no snapshot of every sequence per call).
  absl::flat_hash_map<TenantId, uint32_t> workers;
  for (const LeaseInfo& l : ctx.leases->List()) ++workers[l.tenant];
  for (const TenantUsage& u : ctx.ledger->AllUsage()) {
    const TenantSpec spec = ctx.ledger->spec(u.id);
    v1::TenantInfo* t = out->add_tenants();
    t->set_name(spec.name);
    t->set_quota_bytes(spec.quota_bytes);
    t->set_quota_pages(spec.quota_pages);
    t->set_weight(spec.weight);
    t->set_used_bytes(u.bytes);
    t->set_used_pages(u.pages);
    t->set_peak_pages(u.peak_pages);
    t->set_sequences(ctx.table->TenantSequences(u.id));
    t->set_workers(workers[u.id]);
    t->set_quota_refusals(u.quota_refusals);
    t->set_open_streams(u.open_streams);
    t->set_limit_refusals(u.limit_refusals);
    t->set_source(TenantSourceName(spec.source));
    t->set_removed(spec.removed);
  }
}

void SnapshotAttachments(const ServiceContext& ctx, v1::ListAttachmentsResponse* out) {
  if (ctx.data_plane == nullptr || ctx.data_plane->attach == nullptr) return;
  const absl::Time now = absl::Now();
  for (const AttachmentSnapshot& a : ctx.data_plane->attach->List()) {
    v1::AttachmentInfo* info = out->add_attachments();
    info->set_attachment_id(a.id);
    info->set_tenant(ctx.ledger->name(a.tenant));
    info->set_lease_id(a.lease);
    info->set_pool(a.pool);
    info->set_pid(a.pid);
    info->set_writable(a.writable);
    info->set_chunks(a.chunks);
    info->set_age_ms(absl::ToInt64Milliseconds(now - a.since));
  }
}

}  // namespace kvwarden
