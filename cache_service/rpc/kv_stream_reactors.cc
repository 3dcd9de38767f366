#include "cache_service/rpc/kv_stream_reactors.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_format.h"
#include "cache_service/rpc/call_auth.h"
#include "cache_service/rpc/grpc_status.h"
#include "cache_service/rpc/raw_messages.h"

namespace kvwarden {
namespace {

class WriteKvReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  WriteKvReactor(const ServiceContext& ctx, grpc::CallbackServerContext* call, grpc::ByteBuffer* resp)
      : ctx_(ctx), resp_(resp) {
    absl::StatusOr<TenantId> tenant = OpenTenantStream(*ctx_.auth, *ctx_.ledger, *call);
    if (!tenant.ok()) {
      Finish(ToGrpcStatus(tenant.status()));
      return;
    }
    tenant_ = *tenant;
    StartRead(&buf_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed: everything arrived
      SerializeMessage(done_, resp_);
      Finish(grpc::Status::OK);
      return;
    }
    absl::Status s = ParseStreamMessage(&buf_, done_.messages() + 1, &req_);
    if (s.ok()) {
      s = ctx_.table->WriteKV(req_.sequence_id(), tenant_, req_.layer(), req_.token_start(),
                              req_.num_tokens(), req_.k(), req_.v());
    }
    if (!s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    done_.set_messages(done_.messages() + 1);
    done_.set_bytes_written(done_.bytes_written() + req_.k().size() + req_.v().size());
    StartRead(&buf_);
  }

  void OnDone() override {
    if (tenant_ != kNoTenant) ctx_.ledger->CloseStream(tenant_);
    delete this;
  }

 private:
  const ServiceContext ctx_;
  grpc::ByteBuffer* const resp_;
  TenantId tenant_ = kNoTenant;
  grpc::ByteBuffer buf_;
  v1::WriteKVRequest req_;
  v1::WriteKVResponse done_;
};

class ReadKvReactor final : public grpc::ServerWriteReactor<v1::ReadKVResponse> {
 public:
  ReadKvReactor(const ServiceContext& ctx, grpc::CallbackServerContext* call,
                const v1::ReadKVRequest& req)
      : ctx_(ctx), req_(req) {
    if (absl::Status s = Plan(*call); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    WriteNext();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    WriteNext();
  }

  void OnDone() override {
    if (caller_.tenant != kNoTenant) ctx_.ledger->CloseStream(caller_.tenant);
    delete this;
  }

 private:
  absl::Status Plan(const grpc::CallbackServerContext& call) {
    // Tenant tokens only: the operator's admin token sees metadata (DescribeSequence,
    // AdminService), never a tenant's KV bytes.
    // Each open stream holds up to one message (kMaxKvMessageBytes) in the daemon.
    absl::StatusOr<TenantId> tenant = OpenTenantStream(*ctx_.auth, *ctx_.ledger, call);
    if (!tenant.ok()) return tenant.status();
    caller_ = Caller::Tenant(*tenant);
    // A read sees one epoch: the one named, else the one current now.
    absl::StatusOr<ReadPlan> plan = ctx_.table->PlanRead(
        req_.sequence_id(), caller_, req_.layer_start(), req_.layer_count(), req_.token_start(),
        req_.token_end(), req_.has_epoch() ? std::optional<uint64_t>(req_.epoch()) : std::nullopt);
    if (!plan.ok()) return plan.status();
    epoch_ = plan->epoch;
    token_end_ = plan->token_end;
    const KvLayout& l = plan->layout;
    const size_t per_token = 2 * size_t{l.num_kv_heads} * l.token_bytes();
    chunk_tokens_ = static_cast<uint32_t>(std::max<size_t>(1, kMaxKvMessageBytes / per_token));
    layer_ = req_.layer_start();
    next_token_ = req_.token_start();
    return absl::OkStatus();
  }

  void WriteNext() {
    if (layer_ == req_.layer_start() + req_.layer_count()) {
      Finish(grpc::Status::OK);
      return;
    }
    const uint32_t end = std::min<uint64_t>(token_end_, uint64_t{next_token_} + chunk_tokens_);
    absl::StatusOr<KvSlice> slice =
        ctx_.table->ReadKV(req_.sequence_id(), caller_, layer_, next_token_, end, epoch_);
    if (!slice.ok()) {
      Finish(ToGrpcStatus(slice.status()));
      return;
    }
    resp_.Clear();
    resp_.set_epoch(slice->epoch);
    resp_.set_layer(layer_);
    resp_.set_token_start(next_token_);
    resp_.set_token_end(end);
    resp_.mutable_head_live_counts()->Add(slice->head_live_counts.begin(),
                                          slice->head_live_counts.end());
    resp_.mutable_positions()->Add(slice->positions.begin(), slice->positions.end());
    *resp_.mutable_k() = std::move(slice->k);
    *resp_.mutable_v() = std::move(slice->v);
    next_token_ = end;
    if (next_token_ == token_end_) {
      ++layer_;
      next_token_ = req_.token_start();
    }
    StartWrite(&resp_);
  }

  const ServiceContext ctx_;
  const v1::ReadKVRequest req_;
  Caller caller_;
  uint64_t epoch_ = 0;
  uint32_t token_end_ = 0;
  uint32_t chunk_tokens_ = 1;
  uint32_t layer_ = 0;
  uint32_t next_token_ = 0;
  v1::ReadKVResponse resp_;
};

}  // namespace

grpc::ServerReadReactor<grpc::ByteBuffer>* NewWriteKvReactor(const ServiceContext& ctx,
                                                             grpc::CallbackServerContext* call,
                                                             grpc::ByteBuffer* resp) {
  return new WriteKvReactor(ctx, call, resp);
}

grpc::ServerWriteReactor<v1::ReadKVResponse>* NewReadKvReactor(const ServiceContext& ctx,
                                                               grpc::CallbackServerContext* call,
                                                               const v1::ReadKVRequest* req) {
  return new ReadKvReactor(ctx, call, *req);
}

}  // namespace kvwarden
