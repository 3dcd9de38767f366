#include "cache_service/rpc/transfer_service.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "cache_service/dataplane/attach_server.h"
#include "cache_service/rpc/call_auth.h"
#include "cache_service/rpc/grpc_status.h"
#include "cache_service/rpc/proto_convert.h"
#include "cache_service/dataplane/ucx_data_plane.h"
#include "cache_service/rpc/unary_call.h"

namespace kvwarden {
namespace {

absl::StatusOr<TransferMode> ModeFromProto(v1::TransferMode mode) {
  switch (mode) {
    case v1::TRANSFER_MODE_READ:
      return TransferMode::kRead;
    case v1::TRANSFER_MODE_WRITE:
      return TransferMode::kWrite;
    default:
      return absl::InvalidArgumentError("mode: must be TRANSFER_MODE_READ or TRANSFER_MODE_WRITE");
  }
}

const DataPlaneParts& PartsOf(const ServiceContext& ctx) {
  static const DataPlaneParts kNone;
  return ctx.data_plane != nullptr ? *ctx.data_plane : kNone;
}

}  // namespace

grpc::ServerUnaryReactor* TransferServiceImpl::GetDataPlane(grpc::CallbackServerContext* call,
                                                            const v1::GetDataPlaneRequest* req,
                                                            v1::DataPlaneInfo* resp) {
  return FinishWith(call, [&]() -> absl::Status {
    absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
    if (!tenant.ok()) return tenant.status();
    absl::StatusOr<PagePool*> pool = ctx_.pools->Find(req->pool());
    if (!pool.ok()) return pool.status();
    const DataPlaneParts& dp = PartsOf(ctx_);
    if (dp.ucx == nullptr && dp.attach == nullptr && dp.tcp_data_port == 0) {
      return absl::UnavailableError(
          "this kvwardend runs without a data plane (UCX, TCP and attach off)");
    }
    resp->set_instance_id(dp.instance_id);
    if (dp.ucx != nullptr) resp->set_ucx_worker_address(dp.ucx->worker_address());
    if (dp.attach != nullptr) resp->set_attach_socket(dp.attach->path());
    ToProto((*pool)->layout(), resp->mutable_layout());
    resp->set_page_bytes((*pool)->page_bytes());
    resp->set_chunk_bytes((*pool)->chunk_bytes());
    resp->set_device((*pool)->device());
    resp->set_tcp_data_port(dp.tcp_data_port);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TransferServiceImpl::BeginTransfer(grpc::CallbackServerContext* call,
                                                             const v1::BeginTransferRequest* req,
                                                             v1::TransferGrant* resp) {
  return FinishWith(call, [&]() -> absl::Status {
    absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
    if (!tenant.ok()) return tenant.status();
    absl::StatusOr<TransferMode> mode = ModeFromProto(req->mode());
    if (!mode.ok()) return mode.status();
    if (!v1::TransferPath_IsValid(req->path())) {
      return absl::InvalidArgumentError(
          absl::StrCat("path: ", req->path(), " is not a TransferPath"));
    }
    if (req->path() == v1::TRANSFER_PATH_TCP && PartsOf(ctx_).tcp_data_port == 0) {
      return absl::FailedPreconditionError("this kvwardend serves no TCP data path");
    }
    TransferArgs args;
    args.tenant = *tenant;
    args.lease = req->lease_id();
    args.sequence = req->sequence_id();
    args.layer_start = req->layer_start();
    args.layer_count = req->layer_count();
    args.slot_start = req->slot_start();
    args.slot_end = req->slot_end();
    args.mode = *mode;
    args.ttl = absl::Milliseconds(req->ttl_ms());
    absl::StatusOr<TransferGrant> grant = ctx_.table->BeginTransfer(args);
    if (!grant.ok()) return grant.status();
    const DataPlaneParts& dp = PartsOf(ctx_);
    const uint64_t page_bytes = grant->pool->page_bytes();
    // In place (an attachment on this host) the pool's own chunks are what the caller maps,
    // and the TCP path is served by the daemon: no staging and no UCX keys for either.
    const bool via_ucx = dp.ucx != nullptr && req->path() == v1::TRANSFER_PATH_UCX;
    if (via_ucx && dp.ucx->NeedsStaging(*grant->pool)) {
      // UCX cannot reach this pool's memory: the grant names a staging buffer instead.
      absl::StatusOr<ChunkRemoteKey> key = dp.ucx->Stage(*tenant, args.mode, *grant);
      if (!key.ok()) {
        (void)ctx_.table->EndTransfer(grant->id, Caller::Tenant(*tenant));
        return key.status();
      }
      grant->chunks = {{key->chunk, key->generation}};
      for (size_t i = 0; i < grant->layers.size(); ++i) {
        grant->layers[i] = {
            PageRun{key->chunk, i * grant->num_pages * page_bytes, grant->num_pages}};
      }
      v1::ChunkKey* k = resp->add_keys();
      k->set_chunk(key->chunk);
      k->set_generation(key->generation);
      k->set_remote_address(key->remote_address);
      k->set_size(key->size);
      k->set_rkey(key->rkey);
    }
    absl::flat_hash_map<uint32_t, uint64_t> known;
    for (const v1::ChunkRef& k : req->known_chunks()) known[k.chunk()] = k.generation();
    for (const auto& [chunk, generation] : grant->chunks) {
      v1::ChunkRef* ref = resp->add_chunks();
      ref->set_chunk(chunk);
      ref->set_generation(generation);
      if (!via_ucx || (chunk & UcxDataPlane::kStagingChunkBit) != 0) continue;
      if (auto it = known.find(chunk); it != known.end() && it->second == generation) continue;
      absl::StatusOr<ChunkRemoteKey> key = dp.ucx->Key(*grant->pool, chunk, generation);
      if (!key.ok()) {
        (void)ctx_.table->EndTransfer(grant->id, Caller::Tenant(*tenant));
        return key.status();
      }
      v1::ChunkKey* k = resp->add_keys();
      k->set_chunk(chunk);
      k->set_generation(generation);
      k->set_remote_address(key->remote_address);
      k->set_size(key->size);
      k->set_rkey(key->rkey);
    }
    resp->set_transfer_id(grant->id);
    resp->set_instance_id(dp.instance_id);
    resp->set_epoch(grant->epoch);
    resp->set_first_page(grant->first_page);
    resp->set_num_pages(grant->num_pages);
    resp->set_page_bytes(grant->pool->page_bytes());
    for (size_t i = 0; i < grant->layers.size(); ++i) {
      v1::LayerPageRuns* layer = resp->add_layers();
      layer->set_layer(args.layer_start + static_cast<uint32_t>(i));
      for (const PageRun& r : grant->layers[i]) {
        v1::PageRun* run = layer->add_runs();
        run->set_chunk(r.chunk);
        run->set_offset(r.offset);
        run->set_pages(r.pages);
      }
    }
    resp->set_expires_unix_ms(absl::ToUnixMillis(grant->expires));
    resp->set_data_secret(grant->secret.data(), grant->secret.size());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TransferServiceImpl::EndTransfer(grpc::CallbackServerContext* call,
                                                           const v1::EndTransferRequest* req,
                                                           v1::EndTransferResponse*) {
  return FinishWith(call, [&]() -> absl::Status {
    absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
    if (!tenant.ok()) return tenant.status();
    return ctx_.table->EndTransfer(req->transfer_id(), Caller::Tenant(*tenant));
  });
}

}  // namespace kvwarden
