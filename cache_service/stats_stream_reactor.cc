#include "cache_service/stats_stream_reactor.h"

#include "cache_service/call_auth.h"
#include "cache_service/grpc_status.h"

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

class StatsStreamReactor final : public grpc::ServerBidiReactor<v1::StatsMessage, v1::RetentionUpdate> {
 public:
  StatsStreamReactor(const ServiceContext& ctx, grpc::CallbackServerContext* call) : ctx_(ctx) {
    absl::StatusOr<TenantId> tenant = AuthenticateTenant(*ctx_.auth, *call);
    if (!tenant.ok()) {
      Finish(ToGrpcStatus(tenant.status()));
      return;
    }
    tenant_ = *tenant;
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    absl::StatusOr<RetentionResult> r = ctx_.table->ApplyStats(req_.sequence_id(), tenant_, FromProto(req_));
    if (!r.ok()) {
      Finish(ToGrpcStatus(r.status()));
      return;
    }
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
    StartWrite(&resp_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    StartRead(&req_);
  }

  void OnDone() override { delete this; }

 private:
  const ServiceContext ctx_;
  TenantId tenant_ = kNoTenant;
  v1::StatsMessage req_;
  v1::RetentionUpdate resp_;
};

}  // namespace

grpc::ServerBidiReactor<v1::StatsMessage, v1::RetentionUpdate>* NewStatsStreamReactor(
    const ServiceContext& ctx, grpc::CallbackServerContext* call) {
  return new StatsStreamReactor(ctx, call);
}

}  // namespace kvwarden
