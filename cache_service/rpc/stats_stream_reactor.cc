#include "cache_service/rpc/stats_stream_reactor.h"

#include "cache_service/rpc/call_auth.h"
#include "cache_service/rpc/grpc_status.h"
#include "cache_service/rpc/proto_convert.h"
#include "cache_service/rpc/raw_messages.h"
#include "cache_service/rpc/unary_call.h"

namespace kvwarden {
namespace {

class StatsStreamReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  StatsStreamReactor(const ServiceContext& ctx, grpc::CallbackServerContext* call) : ctx_(ctx), call_(call) {
    absl::StatusOr<TenantId> tenant = OpenTenantStream(*ctx_.auth, *ctx_.ledger, *call);
    if (!tenant.ok()) {
      Finish(ToGrpcStatus(tenant.status()));
      return;
    }
    tenant_ = *tenant;
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    if (absl::Status s = ParseStreamMessage(&in_, ++messages_, &req_); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    // A compaction under a transfer lease waits parked, off this callback thread; the
    // next read starts only once this message is answered, so at most one is parked.
    ctx_.parked->Run(ParkedCall(call_, tenant_, [this] { return Apply(); }, [this](absl::Status s) {
      if (s.ok()) {
        SerializeMessage(resp_, &out_);
        StartWrite(&out_);
      } else {
        Finish(ToGrpcStatus(s));
      }
    }));
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    StartRead(&in_);
  }

  void OnDone() override {
    if (tenant_ != kNoTenant) ctx_.ledger->CloseStream(tenant_);
    delete this;
  }

 private:
  absl::Status Apply() {
    absl::StatusOr<RetentionResult> r = ctx_.table->ApplyStats(req_.sequence_id(), tenant_, FromProto(req_));
    if (!r.ok()) return r.status();
    resp_.Clear();
    ToProto(*r, req_.sequence_id(), &resp_);
    return absl::OkStatus();
  }

  const ServiceContext ctx_;
  grpc::CallbackServerContext* const call_;
  TenantId tenant_ = kNoTenant;
  uint64_t messages_ = 0;  // read so far
  grpc::ByteBuffer in_, out_;
  v1::StatsMessage req_;
  v1::RetentionUpdate resp_;
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewStatsStreamReactor(
    const ServiceContext& ctx, grpc::CallbackServerContext* call) {
  return new StatsStreamReactor(ctx, call);
}

}  // namespace kvwarden
