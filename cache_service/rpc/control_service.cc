#include "cache_service/rpc/control_service.h"

#include "absl/strings/str_cat.h"
#include "cache_service/cluster/cluster_view.h"
#include "cache_service/cluster/handles.h"
#include "cache_service/cluster/migrations.h"
#include "cache_service/retention/registry.h"
#include "cache_service/rpc/call_auth.h"
#include "cache_service/rpc/grpc_status.h"
#include "cache_service/rpc/kv_stream_reactors.h"
#include "cache_service/rpc/proto_convert.h"
#include "cache_service/rpc/stats_stream_reactor.h"
#include "cache_service/rpc/unary_call.h"

namespace kvwarden {
namespace {

absl::StatusOr<WorkerRole> RoleFromProto(v1::WorkerRole role) {
  switch (role) {
    case v1::WORKER_ROLE_PREFILL:
      return WorkerRole::kPrefill;
    case v1::WORKER_ROLE_DECODE:
      return WorkerRole::kDecode;
    case v1::WORKER_ROLE_BOTH:
      return WorkerRole::kBoth;
    default:
      return absl::InvalidArgumentError(
          "role: must be WORKER_ROLE_PREFILL, WORKER_ROLE_DECODE or WORKER_ROLE_BOTH");
  }
}

absl::Status HandlesNeedClusterMode() {
  return absl::FailedPreconditionError(
      "handles need cluster mode (--cluster): this daemon is not in a cluster");
}

}  // namespace

grpc::ServerUnaryReactor* ControlServiceImpl::Ping(grpc::CallbackServerContext* call,
                                                   const v1::PingRequest*, v1::PingResponse* resp) {
  return FinishWith(call, [&] {
    resp->set_version(KVWARDEN_VERSION);
    resp->set_uptime_ms(absl::ToInt64Milliseconds(absl::Now() - ctx_.started));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControlServiceImpl::RegisterWorker(grpc::CallbackServerContext* call,
                                                             const v1::RegisterWorkerRequest* req,
                                                             v1::RegisterWorkerResponse* resp) {
  return FinishWith(call, [&]() -> absl::Status {
    absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
    if (!tenant.ok()) return tenant.status();
    absl::StatusOr<WorkerRole> role = RoleFromProto(req->role());
    if (!role.ok()) return role.status();
    if (req->name().size() > 256) return absl::InvalidArgumentError("name: longer than 256 bytes");
    absl::StatusOr<LeaseInfo> lease =
        ctx_.leases->Register(*tenant, req->name(), *role, absl::Milliseconds(req->ttl_ms()));
    if (!lease.ok()) return lease.status();
    resp->set_lease_id(lease->id);
    resp->set_ttl_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(lease->ttl)));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControlServiceImpl::KeepAlive(grpc::CallbackServerContext* call,
                                                        const v1::KeepAliveRequest* req,
                                                        v1::KeepAliveResponse* resp) {
  return FinishWith(call, [&]() -> absl::Status {
    absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
    if (!tenant.ok()) return tenant.status();
    absl::StatusOr<absl::Duration> ttl = ctx_.leases->KeepAlive(req->lease_id(), *tenant);
    if (!ttl.ok()) return ttl.status();
    resp->set_ttl_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(*ttl)));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControlServiceImpl::ReleaseWorker(grpc::CallbackServerContext* call,
                                                            const v1::ReleaseWorkerRequest* req,
                                                            v1::ReleaseWorkerResponse* resp) {
  return FinishWith(call, [&]() -> absl::Status {
    absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
    if (!tenant.ok()) return tenant.status();
    absl::StatusOr<LeaseInfo> lease = ctx_.leases->Release(req->lease_id(), *tenant);
    if (!lease.ok()) return lease.status();
    // As the reaper does for a lapse: once the lease is gone no sequence can be made
    // under it (checked under the table lock), and every one made before is released.
    const size_t n = ctx_.table->ReleaseByLease(lease->id);
    resp->set_released_sequences(static_cast<uint32_t>(n));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControlServiceImpl::CreateSequence(grpc::CallbackServerContext* call,
                                                             const v1::CreateSequenceRequest* req,
                                                             v1::CreateSequenceResponse* resp) {
  return FinishWith(call, [&]() -> absl::Status {
    absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
    if (!tenant.ok()) return tenant.status();
    if (req->pool().empty()) return absl::InvalidArgumentError("pool: is required");
    absl::StatusOr<PagePool*> pool = ctx_.pools->Find(req->pool());
    if (!pool.ok()) return pool.status();
    if ((*pool)->draining()) {
      return absl::UnavailableError(absl::StrCat(
          "pool '", req->pool(), "' is draining: no new sequences (an operator ran kvwctl drain)"));
    }
    CreateSequenceArgs args{*tenant, req->lease_id(), *pool, req->max_tokens(), {}};
    if (req->has_policy()) {
      absl::StatusOr<RetentionPolicy> policy =
          PolicyFromProto(req->policy(), (*pool)->layout(), "policy");
      if (!policy.ok()) return policy.status();
      args.policy = *std::move(policy);
    } else if (const RetentionPolicy* def = ctx_.policy_defaults
                                                ? ctx_.policy_defaults->Find(*tenant, req->pool())
                                                : nullptr) {
      args.policy = *def;
    }
    absl::StatusOr<SequenceId> id = ctx_.table->Create(args);
    if (!id.ok()) return id.status();
    resp->set_sequence_id(*id);
    ToProto((*pool)->layout(), resp->mutable_layout());
    resp->set_epoch(0);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControlServiceImpl::ForkSequence(grpc::CallbackServerContext* call,
                                                           const v1::ForkSequenceRequest* req,
                                                           v1::ForkSequenceResponse* resp) {
  const absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
  if (!tenant.ok()) return FinishWith(call, [&] { return tenant.status(); });
  return FinishParkable(call, ctx_.parked, *tenant,
                        [this, req, resp, tenant = *tenant]() -> absl::Status {
                          absl::StatusOr<ForkResult> fork =
                              ctx_.table->Fork(req->sequence_id(), tenant, req->lease_id());
                          if (!fork.ok()) return fork.status();
                          resp->set_sequence_id(fork->id);
                          resp->set_shared_pages(fork->shared_pages);
                          resp->set_copied_pages(fork->copied_pages);
                          return absl::OkStatus();
                        });
}

grpc::ServerUnaryReactor* ControlServiceImpl::ReleaseSequence(grpc::CallbackServerContext* call,
                                                              const v1::ReleaseSequenceRequest* req,
                                                              v1::ReleaseSequenceResponse* resp) {
  return FinishWith(call, [&]() -> absl::Status {
    absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
    if (!tenant.ok()) return tenant.status();
    absl::StatusOr<uint64_t> freed = ctx_.table->Release(req->sequence_id(), *tenant);
    if (!freed.ok()) return freed.status();
    resp->set_freed_pages(static_cast<uint32_t>(*freed));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControlServiceImpl::DescribeSequence(
    grpc::CallbackServerContext* call, const v1::DescribeSequenceRequest* req,
    v1::SequenceInfo* resp) {
  return FinishWith(call, [&]() -> absl::Status {
    absl::StatusOr<Caller> caller = AuthenticateCall(*ctx_.auth, *call);
    if (!caller.ok()) return caller.status();
    absl::StatusOr<SequenceInfo> snap =
        ctx_.table->Describe(req->sequence_id(), *caller, req->include_pages(), true);
    if (!snap.ok()) return snap.status();
    ToProto(*snap, *ctx_.ledger, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControlServiceImpl::MigrateSequence(grpc::CallbackServerContext* call,
                                                              const v1::MigrateSequenceRequest* req,
                                                              v1::MigrateSequenceResponse* resp) {
  const absl::StatusOr<Caller> caller = AuthenticateCall(*ctx_.auth, *call);
  if (!caller.ok()) return FinishWith(call, [&] { return caller.status(); });
  if (ctx_.migrations == nullptr) {
    return FinishWith(call, [] {
      return absl::FailedPreconditionError(
          "this daemon is not in a cluster (--cluster): there is no node to migrate to");
    });
  }
  // Answered on the migrations' thread: the target is another daemon.
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  ctx_.migrations->MigrateOut(*caller, *req, FinishLater(reactor, resp));
  return reactor;
}

grpc::ServerUnaryReactor* ControlServiceImpl::PublishHandle(grpc::CallbackServerContext* call,
                                                            const v1::PublishHandleRequest* req,
                                                            v1::HandleInfo* resp) {
  const absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
  if (!tenant.ok()) return FinishWith(call, [&] { return tenant.status(); });
  if (ctx_.handles == nullptr) return FinishWith(call, [] { return HandlesNeedClusterMode(); });
  // The sequence must be the caller's: the same NOT_FOUND as for any id it cannot see.
  if (absl::StatusOr<SequenceInfo> seq =
          ctx_.table->Describe(req->sequence_id(), Caller::Tenant(*tenant), false, false);
      !seq.ok()) {
    return FinishWith(call, [&] { return seq.status(); });
  }
  // Answered on the handles' thread: etcd is another server.
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  ctx_.handles->Publish(*tenant, req->sequence_id(), req->handle(), FinishLater(reactor, resp));
  return reactor;
}

grpc::ServerUnaryReactor* ControlServiceImpl::ResolveHandle(grpc::CallbackServerContext* call,
                                                            const v1::ResolveHandleRequest* req,
                                                            v1::HandleInfo* resp) {
  const absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
  if (!tenant.ok()) return FinishWith(call, [&] { return tenant.status(); });
  if (ctx_.handles == nullptr) return FinishWith(call, [] { return HandlesNeedClusterMode(); });
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  ctx_.handles->Resolve(*tenant, req->handle(), FinishLater(reactor, resp));
  return reactor;
}

grpc::ServerUnaryReactor* ControlServiceImpl::ListNodes(grpc::CallbackServerContext* call,
                                                        const v1::ListNodesRequest*,
                                                        v1::ListNodesResponse* resp) {
  return FinishWith(call, [&]() -> absl::Status {
    if (absl::StatusOr<Caller> caller = AuthenticateCall(*ctx_.auth, *call); !caller.ok()) {
      return caller.status();
    }
    if (ctx_.cluster_view == nullptr) {
      return absl::FailedPreconditionError(
          "ListNodes needs cluster mode (--cluster): this daemon is not in a cluster");
    }
    for (v1::NodeInfo& n : ctx_.cluster_view->Nodes()) *resp->add_nodes() = std::move(n);
    resp->set_self(ctx_.node);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControlServiceImpl::ReserveSlots(grpc::CallbackServerContext* call,
                                                           const v1::ReserveSlotsRequest* req,
                                                           v1::ReserveSlotsResponse* resp) {
  const absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
  if (!tenant.ok()) return FinishWith(call, [&] { return tenant.status(); });
  return FinishParkable(
      call, ctx_.parked, *tenant, [this, req, resp, tenant = *tenant]() -> absl::Status {
        absl::StatusOr<Reservation> r =
            ctx_.table->Reserve(req->sequence_id(), tenant, req->num_tokens());
        if (!r.ok()) return r.status();
        resp->set_first_position(r->first_position);
        resp->set_num_tokens(r->num_tokens);
        resp->set_first_slot(r->first_slot);
        resp->set_first_page_offset(r->first_page_offset);
        resp->set_epoch(r->epoch);
        for (const auto& pages : r->layer_pages) {
          resp->add_layers()->mutable_page_ids()->Add(pages.begin(), pages.end());
        }
        resp->mutable_first_slots()->Add(r->first_slots.begin(), r->first_slots.end());
        for (const HeadRetention& c : r->evicted) ToProto(c, resp->add_evicted());
        return absl::OkStatus();
      });
}

grpc::ServerReadReactor<grpc::ByteBuffer>* ControlServiceImpl::WriteKV(
    grpc::CallbackServerContext* call, grpc::ByteBuffer* resp) {
  return NewWriteKvReactor(ctx_, call, resp);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ControlServiceImpl::StreamStats(
    grpc::CallbackServerContext* call) {
  return NewStatsStreamReactor(ctx_, call);
}

grpc::ServerWriteReactor<v1::ReadKVResponse>* ControlServiceImpl::ReadKV(
    grpc::CallbackServerContext* call, const v1::ReadKVRequest* req) {
  return NewReadKvReactor(ctx_, call, req);
}

}  // namespace kvwarden
