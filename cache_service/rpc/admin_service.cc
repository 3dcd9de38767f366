#include "cache_service/rpc/admin_service.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cache_service/rpc/admin_snapshots.h"
#include "cache_service/rpc/call_auth.h"
#include "cache_service/rpc/grpc_status.h"
#include "cache_service/rpc/proto_convert.h"
#include "cache_service/util/log.h"

namespace kvwarden {

constexpr size_t kDefaultSequencePage = 1000;
constexpr size_t kMaxSequencePage = 10000;
namespace {

absl::Status RequireAdmin(const Authenticator& auth, const grpc::CallbackServerContext& call) {
  absl::StatusOr<Caller> caller = AuthenticateCall(auth, call);
  if (!caller.ok()) return caller.status();
  if (!caller->admin) return absl::PermissionDeniedError("admin calls need the admin token");
  return absl::OkStatus();
}

// Authenticates as admin, then runs `fn` and finishes the call with its status.
template <typename Fn>
grpc::ServerUnaryReactor* AdminCall(const ServiceContext& ctx, grpc::CallbackServerContext* call,
                                    Fn&& fn) {
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  absl::Status s = RequireAdmin(*ctx.auth, *call);
  if (s.ok()) s = fn();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* AdminServiceImpl::ListPools(grpc::CallbackServerContext* call,
                                                      const v1::ListPoolsRequest*,
                                                      v1::ListPoolsResponse* resp) {
  return AdminCall(ctx_, call, [&] {
    SnapshotPools(ctx_, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetPoolStats(grpc::CallbackServerContext* call,
                                                         const v1::GetPoolStatsRequest* req,
                                                         v1::PoolStats* resp) {
  return AdminCall(ctx_, call, [&]() -> absl::Status {
    absl::StatusOr<PagePool*> pool = ctx_.pools->Find(req->pool());
    if (!pool.ok()) return pool.status();
    ToProto(**pool, *ctx_.ledger, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListTenants(grpc::CallbackServerContext* call,
                                                        const v1::ListTenantsRequest*,
                                                        v1::ListTenantsResponse* resp) {
  return AdminCall(ctx_, call, [&] {
    SnapshotTenants(ctx_, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListSequences(grpc::CallbackServerContext* call,
                                                          const v1::ListSequencesRequest* req,
                                                          v1::ListSequencesResponse* resp) {
  return AdminCall(ctx_, call, [&]() -> absl::Status {
    std::optional<TenantId> tenant;
    if (!req->tenant().empty()) {
      tenant = ctx_.ledger->Find(req->tenant());
      if (!tenant)
        return absl::NotFoundError(absl::StrCat("tenant '", req->tenant(), "' not found"));
    }
    if (!req->pool().empty()) {
      if (absl::StatusOr<PagePool*> p = ctx_.pools->Find(req->pool()); !p.ok()) return p.status();
    }
    // Pages by id, so that any number of sequences lists within gRPC's message limit.
    if (req->page_size() > kMaxSequencePage) {
      return absl::InvalidArgumentError(absl::StrCat("page_size: at most ", kMaxSequencePage));
    }
    const size_t page = req->page_size() ? req->page_size() : kDefaultSequencePage;
    SequenceId after = 0;
    if (!req->page_token().empty() && !absl::SimpleAtoi(req->page_token(), &after)) {
      return absl::InvalidArgumentError("page_token: not a token ListSequences gave");
    }
    SequenceId last = 0;
    for (const SequenceInfo& s : ctx_.table->List(tenant, req->pool(), after, page, &last)) {
      ToProto(s, *ctx_.ledger, resp->add_sequences());
    }
    if (last != 0) resp->set_next_page_token(absl::StrCat(last));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListWorkers(grpc::CallbackServerContext* call,
                                                        const v1::ListWorkersRequest*,
                                                        v1::ListWorkersResponse* resp) {
  return AdminCall(ctx_, call, [&] {
    absl::flat_hash_map<LeaseId, uint32_t> seqs;
    for (const SequenceInfo& s : ctx_.table->List(std::nullopt, "")) ++seqs[s.lease];
    const absl::Time now = ctx_.leases->clock()->Now();
    for (const LeaseInfo& l : ctx_.leases->List()) {
      v1::WorkerInfo* w = resp->add_workers();
      w->set_lease_id(l.id);
      w->set_tenant(ctx_.ledger->name(l.tenant));
      w->set_name(l.name);
      w->set_role(static_cast<v1::WorkerRole>(l.role));
      w->set_ttl_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(l.ttl)));
      w->set_expires_in_ms(absl::ToInt64Milliseconds(l.expires - now));
      w->set_sequences(seqs[l.id]);
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListTransfers(grpc::CallbackServerContext* call,
                                                          const v1::ListTransfersRequest*,
                                                          v1::ListTransfersResponse* resp) {
  return AdminCall(ctx_, call, [&] {
    const absl::Time now = ctx_.leases->clock()->Now();
    for (const TransferInfo& t : ctx_.table->ListTransfers(std::nullopt)) {
      v1::TransferInfo* out = resp->add_transfers();
      out->set_transfer_id(t.id);
      out->set_tenant(ctx_.ledger->name(t.tenant));
      out->set_lease_id(t.lease);
      out->set_sequence_id(t.sequence);
      out->set_pool(t.pool);
      out->set_mode(t.mode == TransferMode::kWrite ? "write" : "read");
      out->set_layer_start(t.layer_start);
      out->set_layer_count(t.layer_count);
      out->set_first_page(t.first_page);
      out->set_num_pages(t.num_pages);
      out->set_pinned_pages(t.pinned_pages);
      out->set_age_ms(absl::ToInt64Milliseconds(now - t.started));
      out->set_expires_in_ms(absl::ToInt64Milliseconds(t.expires - now));
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListAttachments(grpc::CallbackServerContext* call,
                                                            const v1::ListAttachmentsRequest*,
                                                            v1::ListAttachmentsResponse* resp) {
  return AdminCall(ctx_, call, [&] {
    SnapshotAttachments(ctx_, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::SetPoolDraining(grpc::CallbackServerContext* call,
                                                            const v1::SetPoolDrainingRequest* req,
                                                            v1::PoolStats* resp) {
  return AdminCall(ctx_, call, [&]() -> absl::Status {
    absl::StatusOr<PagePool*> pool = ctx_.pools->Find(req->pool());
    if (!pool.ok()) return pool.status();
    const bool was = (*pool)->draining();
    (*pool)->set_draining(req->draining());
    bool all = true;
    for (const PagePool* p : ctx_.pools->all()) all = all && p->draining();
    if (ctx_.set_serving != nullptr && *ctx_.set_serving) (*ctx_.set_serving)(!all);
    if (was != req->draining()) {
      LogEvent(LogLevel::kInfo, req->draining() ? "pool_draining" : "pool_undrained")
          .Field("pool", req->pool())
          .Field("sequences", ctx_.table->List(std::nullopt, req->pool()).size())
          .Field("health", all ? "NOT_SERVING" : "SERVING");
    }
    ToProto(**pool, *ctx_.ledger, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetConfig(grpc::CallbackServerContext* call,
                                                      const v1::GetConfigRequest*,
                                                      v1::GetConfigResponse* resp) {
  return AdminCall(ctx_, call, [&]() -> absl::Status {
    if (ctx_.config_text == nullptr)
      return absl::UnavailableError("this daemon keeps no copy of its config");
    resp->set_text(*ctx_.config_text);
    if (ctx_.config_path != nullptr) resp->set_path(*ctx_.config_path);
    return absl::OkStatus();
  });
}

}  // namespace kvwarden
