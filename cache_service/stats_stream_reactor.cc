#include "cache_service/stats_stream_reactor.h"

#include "cache_service/call_auth.h"
#include "cache_service/grpc_status.h"
#include "cache_service/raw_messages.h"
#include "cache_service/unary_call.h"

namespace kvwarden {
namespace {

StatsBatch FromProto(const v1::StatsMessage& in) {
  StatsBatch out;
  out.epoch = in.epoch();
  for (const v1::DecodeStep& step : in.steps()) {
    DecodeStepStats& s = out.steps.emplace_back();
    s.heads.reserve(step.heads_size());
    for (const v1::HeadStats& h : step.heads()) {
      s.heads.push_back(HeadStepStats{h.layer(), h.head(), h.attended(),
                                      {h.listed().begin(), h.listed().end()},
                                      {h.dense().begin(), h.dense().end()}});
    }
  }
  for (const v1::WindowScores& w : in.window_scores()) {
    out.window_scores.push_back(WindowScoresIn{w.layer(), {w.sums().begin(), w.sums().end()}});
  }
  return out;
}

class StatsStreamReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  StatsStreamReactor(const ServiceContext& ctx, grpc::CallbackServerContext* call) : ctx_(ctx), call_(call) {
    absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
    if (!tenant.ok()) {
      Finish(ToGrpcStatus(tenant.status()));
      return;
    }
    if (absl::Status s = ctx_.ledger->OpenStream(*tenant); !s.ok()) {
      Finish(ToGrpcStatus(s));
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
    ctx_.parked->Run(ParkedCall(call_, [this] { return Apply(); }, [this](absl::Status s) {
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
    resp_.set_sequence_id(req_.sequence_id());
    resp_.set_epoch(r->epoch);
    resp_.set_steps_applied(r->steps_applied);
    resp_.set_pages_freed(static_cast<uint32_t>(r->pages_freed));
    for (const HeadChange& c : r->changes) {
      v1::HeadRetention* h = resp_.add_heads();
      h->set_layer(c.layer);
      h->set_head(c.head);
      h->set_live_slots(c.live_slots);
      h->mutable_evicted_positions()->Add(c.evicted_positions.begin(), c.evicted_positions.end());
    }
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
