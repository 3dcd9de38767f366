#include "kvwarden/client.h"

#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client_impl.h"
#include "common/net/kv_messages.h"
#include "grpcpp/grpcpp.h"
#include "kvwarden/v1/control.grpc.pb.h"

namespace kvwarden {
namespace client {
namespace {

HeadRetention FromProto(const v1::HeadRetention& h) {
  return HeadRetention{h.layer(),
                       h.head(),
                       h.live_slots(),
                       {h.evicted_positions().begin(), h.evicted_positions().end()}};
}

}  // namespace

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const Options& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("target: is required");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->channel = NewChannel(options);
  impl->stub = v1::ControlService::NewStub(impl->channel);
  impl->transfer = v1::TransferService::NewStub(impl->channel);
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

const Options& Client::options() const { return impl_->options; }

bool Client::AwaitConnected(absl::Duration timeout) {
  grpc::experimental::ChannelResetConnectionBackoff(impl_->channel.get());
  return impl_->channel->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout));
}

absl::StatusOr<std::string> Client::Ping() {
  auto ctx = impl_->Context();
  v1::PingResponse resp;
  grpc::Status s = impl_->stub->Ping(ctx.get(), v1::PingRequest(), &resp);
  if (!s.ok()) return FromGrpc(s);
  return resp.version();
}

absl::StatusOr<Lease> Client::RegisterWorker(const std::string& name, Role role, uint32_t ttl_ms) {
  auto ctx = impl_->Context();
  v1::RegisterWorkerRequest req;
  req.set_name(name);
  req.set_role(static_cast<v1::WorkerRole>(role));
  req.set_ttl_ms(ttl_ms);
  v1::RegisterWorkerResponse resp;
  grpc::Status s = impl_->stub->RegisterWorker(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  return Lease{resp.lease_id(), resp.ttl_ms()};
}

absl::Status Client::KeepAlive(uint64_t lease_id) {
  auto ctx = impl_->Context();
  v1::KeepAliveRequest req;
  req.set_lease_id(lease_id);
  v1::KeepAliveResponse resp;
  return FromGrpc(impl_->stub->KeepAlive(ctx.get(), req, &resp));
}

absl::StatusOr<uint32_t> Client::ReleaseWorker(uint64_t lease_id) {
  auto ctx = impl_->Context();
  v1::ReleaseWorkerRequest req;
  req.set_lease_id(lease_id);
  v1::ReleaseWorkerResponse resp;
  grpc::Status s = impl_->stub->ReleaseWorker(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  return resp.released_sequences();
}

static void ToProto(const Policy& p, v1::RetentionPolicy* out) {
  switch (p.kind) {
    case Policy::Kind::kDefault:
      return;
    case Policy::Kind::kFull:
      out->mutable_full();
      return;
    case Policy::Kind::kStreaming: {
      auto* s = out->mutable_streaming();
      s->set_budget(p.budget);
      if (p.sinks) s->set_sinks(*p.sinks);
      return;
    }
    case Policy::Kind::kScissorhands: {
      auto* s = out->mutable_scissorhands();
      s->set_budget(p.budget);
      s->set_window(p.window);
      s->set_recent(p.recent);
      s->set_drop(p.drop);
      s->set_sinks(p.sinks.value_or(0));
      s->set_threshold_scale(p.threshold_scale);
      s->mutable_layer_budgets()->Add(p.layer_budgets.begin(), p.layer_budgets.end());
      return;
    }
    case Policy::Kind::kWindowKv: {
      auto* w = out->mutable_windowkv();
      w->set_alpha(p.alpha);
      if (p.omega != 0) w->set_omega(p.omega);
      w->set_task(p.aggregation ? v1::WindowKvPolicy::TASK_AGGREGATION
                                : v1::WindowKvPolicy::TASK_LOCALIZATION);
      w->set_top_p(p.top_p);
      w->set_gamma(p.gamma);
      w->set_lambda(p.lambda);
      w->set_mean_budget(p.mean_budget);
      return;
    }
    case Policy::Kind::kH2o: {
      auto* h = out->mutable_h2o();
      h->set_budget(p.budget);
      h->set_recent(p.recent);
      h->set_drop(p.drop);
      h->set_sinks(p.sinks.value_or(0));
      h->mutable_layer_budgets()->Add(p.layer_budgets.begin(), p.layer_budgets.end());
      return;
    }
  }
}

absl::StatusOr<Sequence> Client::CreateSequence(uint64_t lease_id, const std::string& pool,
                                                uint32_t max_tokens, const Policy& policy) {
  auto ctx = impl_->Context();
  v1::CreateSequenceRequest req;
  req.set_lease_id(lease_id);
  req.set_pool(pool);
  req.set_max_tokens(max_tokens);
  if (policy.kind != Policy::Kind::kDefault) ToProto(policy, req.mutable_policy());
  v1::CreateSequenceResponse resp;
  grpc::Status s = impl_->stub->CreateSequence(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  return Sequence{resp.sequence_id(), FromProto(resp.layout()), resp.epoch()};
}

absl::StatusOr<Fork> Client::ForkSequence(uint64_t sequence_id, uint64_t lease_id) {
  auto ctx = impl_->Context();
  v1::ForkSequenceRequest req;
  req.set_sequence_id(sequence_id);
  req.set_lease_id(lease_id);
  v1::ForkSequenceResponse resp;
  grpc::Status s = impl_->stub->ForkSequence(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  return Fork{resp.sequence_id(), resp.shared_pages(), resp.copied_pages()};
}

absl::StatusOr<uint32_t> Client::ReleaseSequence(uint64_t sequence_id) {
  auto ctx = impl_->Context();
  v1::ReleaseSequenceRequest req;
  req.set_sequence_id(sequence_id);
  v1::ReleaseSequenceResponse resp;
  grpc::Status s = impl_->stub->ReleaseSequence(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  return resp.freed_pages();
}

absl::StatusOr<Migration> Client::MigrateSequence(uint64_t sequence_id,
                                                  const std::string& target_node,
                                                  const MigrateOptions& options) {
  auto ctx = impl_->Context();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + options.timeout));
  v1::MigrateSequenceRequest req;
  req.set_sequence_id(sequence_id);
  req.set_target_node(target_node);
  req.set_target_lease_id(options.target_lease_id);
  req.set_hold_ms(static_cast<uint32_t>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(options.hold), 0, UINT32_MAX)));
  v1::MigrateSequenceResponse resp;
  grpc::Status s = impl_->stub->MigrateSequence(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  return Migration{resp.node(),     resp.grpc_address(), resp.sequence_id(),
                   resp.lease_id(), resp.bytes_moved(),  absl::Microseconds(resp.duration_us())};
}

namespace {
Handle FromProto(const v1::HandleInfo& h) {
  return Handle{h.handle(), h.node(), h.grpc_address(), h.sequence_id()};
}
}  // namespace

absl::StatusOr<Handle> Client::PublishHandle(uint64_t sequence_id, const std::string& handle) {
  auto ctx = impl_->Context();
  v1::PublishHandleRequest req;
  req.set_sequence_id(sequence_id);
  req.set_handle(handle);
  v1::HandleInfo resp;
  grpc::Status s = impl_->stub->PublishHandle(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  return FromProto(resp);
}

absl::StatusOr<Handle> Client::ResolveHandle(const std::string& handle) {
  auto ctx = impl_->Context();
  v1::ResolveHandleRequest req;
  req.set_handle(handle);
  v1::HandleInfo resp;
  grpc::Status s = impl_->stub->ResolveHandle(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  return FromProto(resp);
}

absl::StatusOr<ClusterNodes> Client::ListNodes() {
  auto ctx = impl_->Context();
  v1::ListNodesResponse resp;
  grpc::Status s = impl_->stub->ListNodes(ctx.get(), v1::ListNodesRequest(), &resp);
  if (!s.ok()) return FromGrpc(s);
  ClusterNodes out;
  out.self = resp.self();
  for (const v1::NodeInfo& n : resp.nodes()) {
    NodeInfo& node = out.nodes.emplace_back();
    node.node = n.node();
    node.grpc_address = n.grpc_address();
    node.version = n.version();
    node.migration_transport = n.migration_transport();
    node.updated = absl::FromUnixMillis(n.updated_unix_ms());
    for (const v1::NodePool& p : n.pools()) {
      node.pools.push_back(NodePool{p.name(), p.device(), FromProto(p.layout()), p.capacity_pages(),
                                    p.free_pages()});
    }
  }
  return out;
}

absl::StatusOr<SequenceInfo> Client::DescribeSequence(uint64_t sequence_id) {
  auto ctx = impl_->Context();
  v1::DescribeSequenceRequest req;
  req.set_sequence_id(sequence_id);
  v1::SequenceInfo resp;
  grpc::Status s = impl_->stub->DescribeSequence(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  SequenceInfo out;
  out.id = resp.sequence_id();
  out.tenant = resp.tenant();
  out.pool = resp.pool();
  out.lease = resp.lease_id();
  out.layout = FromProto(resp.layout());
  out.epoch = resp.epoch();
  out.num_tokens = resp.num_tokens();
  out.max_tokens = resp.max_tokens();
  out.policy = resp.policy();
  out.policy_summary = resp.policy_summary();
  out.decode_steps = resp.decode_steps();
  out.pages_held = resp.pages_held();
  out.shared_pages = resp.shared_pages();
  out.parent = resp.parent_sequence_id();
  for (const v1::LayerInfo& layer : resp.layers()) {
    auto& heads = out.heads.emplace_back();
    for (const v1::HeadInfo& h : layer.heads()) {
      HeadInfo& head = heads.emplace_back(HeadInfo{h.live_slots(), h.budget(), h.evicted(), {}});
      for (const v1::HeadFigure& f : h.figures()) head.figures.emplace_back(f.name(), f.value());
    }
  }
  return out;
}

absl::StatusOr<Reservation> Client::ReserveSlots(uint64_t sequence_id, uint32_t num_tokens) {
  auto ctx = impl_->Context();
  v1::ReserveSlotsRequest req;
  req.set_sequence_id(sequence_id);
  req.set_num_tokens(num_tokens);
  v1::ReserveSlotsResponse resp;
  grpc::Status s = impl_->stub->ReserveSlots(ctx.get(), req, &resp);
  if (!s.ok()) return FromGrpc(s);
  Reservation r;
  r.first_position = resp.first_position();
  r.num_tokens = resp.num_tokens();
  r.first_slot = resp.first_slot();
  r.first_page_offset = resp.first_page_offset();
  r.epoch = resp.epoch();
  for (const v1::LayerPages& l : resp.layers()) {
    r.layer_pages.emplace_back(l.page_ids().begin(), l.page_ids().end());
  }
  r.first_slots.assign(resp.first_slots().begin(), resp.first_slots().end());
  for (const v1::HeadRetention& h : resp.evicted()) r.evicted.push_back(FromProto(h));
  return r;
}

absl::Status Client::WriteKV(uint64_t sequence_id, const Layout& layout, uint32_t layer_start,
                             uint32_t layer_count, uint32_t token_start, uint32_t num_tokens,
                             absl::Span<const uint8_t> k, absl::Span<const uint8_t> v) {
  const size_t tb = layout.token_bytes();
  const size_t layer_bytes = layout.layer_bytes(num_tokens);
  if (tb == 0 || num_tokens == 0 || layer_count == 0) {
    return absl::InvalidArgumentError("layout, num_tokens and layer_count must be non-zero");
  }
  if (k.size() != layer_bytes * layer_count || v.size() != k.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("k/v: %d and %d bytes given, %d expected ([layer][head][token][dim])",
                        k.size(), v.size(), layer_bytes * layer_count));
  }
  const uint32_t chunk = static_cast<uint32_t>(
      std::max<size_t>(1, kMaxKvMessageBytes / (2 * size_t{layout.num_kv_heads} * tb)));
  auto ctx = impl_->Context();
  v1::WriteKVResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::WriteKVRequest>> writer =
      impl_->stub->WriteKV(ctx.get(), &resp);
  v1::WriteKVRequest req;
  req.set_sequence_id(sequence_id);
  bool stream_ok = true;
  uint64_t sent = 0;
  for (uint32_t l = 0; l < layer_count && stream_ok; ++l) {
    for (uint32_t t = 0; t < num_tokens && stream_ok; t += chunk) {
      const uint32_t n = std::min(chunk, num_tokens - t);
      req.set_layer(layer_start + l);
      req.set_token_start(token_start + t);
      req.set_num_tokens(n);
      std::string* kb = req.mutable_k();
      std::string* vb = req.mutable_v();
      kb->resize(layout.layer_bytes(n));
      vb->resize(layout.layer_bytes(n));
      // Gather [head][t..t+n) of this layer into the message.
      for (uint32_t h = 0; h < layout.num_kv_heads; ++h) {
        const size_t src = l * layer_bytes + (size_t{h} * num_tokens + t) * tb;
        std::memcpy(kb->data() + size_t{h} * n * tb, k.data() + src, n * tb);
        std::memcpy(vb->data() + size_t{h} * n * tb, v.data() + src, n * tb);
      }
      stream_ok = writer->Write(req);
      sent += stream_ok ? 1 : 0;
    }
  }
  writer->WritesDone();
  if (absl::Status s = FromGrpc(writer->Finish()); !s.ok()) return s;
  // An OK stream must have applied every message: never take success on trust.
  if (resp.messages() != sent) {
    return absl::DataLossError(absl::StrFormat(
        "WriteKV: the daemon applied %d of the %d messages sent", resp.messages(), sent));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<LayerKv>> Client::ReadKV(uint64_t sequence_id, uint32_t layer_start,
                                                    uint32_t layer_count, uint32_t token_start,
                                                    uint32_t token_end,
                                                    std::optional<uint64_t> epoch) {
  auto ctx = impl_->Context();
  v1::ReadKVRequest req;
  req.set_sequence_id(sequence_id);
  req.set_layer_start(layer_start);
  req.set_layer_count(layer_count);
  req.set_token_start(token_start);
  req.set_token_end(token_end);
  if (epoch.has_value()) req.set_epoch(*epoch);
  std::unique_ptr<grpc::ClientReader<v1::ReadKVResponse>> reader =
      impl_->stub->ReadKV(ctx.get(), req);
  // Chunks arrive per layer in token order; each packs its slots head after head, so a
  // layer is reassembled head by head across its chunks.
  std::vector<std::vector<v1::ReadKVResponse>> by_layer(layer_count);
  v1::ReadKVResponse msg;
  while (reader->Read(&msg)) {
    if (msg.layer() < layer_start || msg.layer() >= layer_start + layer_count) {
      return absl::InternalError(absl::StrCat("daemon sent layer ", msg.layer(), " not asked for"));
    }
    by_layer[msg.layer() - layer_start].push_back(std::move(msg));
  }
  if (absl::Status s = FromGrpc(reader->Finish()); !s.ok()) return s;
  std::vector<LayerKv> out;
  for (uint32_t l = 0; l < layer_count; ++l) {
    const auto& chunks = by_layer[l];
    LayerKv kv;
    kv.layer = layer_start + l;
    if (chunks.empty()) return absl::InternalError("daemon sent no data for a layer");
    kv.epoch = chunks.front().epoch();
    const size_t heads = chunks.front().head_live_counts_size();
    kv.head_live_counts.assign(heads, 0);
    const bool dense = std::all_of(chunks.begin(), chunks.end(), [](const v1::ReadKVResponse& c) {
      return c.positions_size() == 0;
    });
    for (size_t h = 0; h < heads; ++h) {
      for (const v1::ReadKVResponse& c : chunks) {
        size_t before = 0, total = 0;  // slots of heads < h, and of all heads, in this chunk
        for (int i = 0; i < c.head_live_counts_size(); ++i) {
          if (static_cast<size_t>(i) < h) before += c.head_live_counts(i);
          total += c.head_live_counts(i);
        }
        const uint32_t n = c.head_live_counts(h);
        const size_t tb = total == 0 ? 0 : c.k().size() / total;
        kv.k.append(c.k(), before * tb, n * tb);
        kv.v.append(c.v(), before * tb, n * tb);
        kv.head_live_counts[h] += n;
        if (dense) continue;
        if (c.positions_size() == 0) {
          // A chunk without positions holds every position of its range, or (a range
          // retention emptied) none at all.
          for (uint32_t p = c.token_start(); n > 0 && p < c.token_end(); ++p)
            kv.positions.push_back(p);
        } else {
          kv.positions.insert(kv.positions.end(), c.positions().begin() + before,
                              c.positions().begin() + before + n);
        }
      }
    }
    out.push_back(std::move(kv));
  }
  return out;
}

namespace {

class GrpcStatsStream final : public StatsStream {
 public:
  GrpcStatsStream(v1::ControlService::Stub* stub, const std::string& token) {
    ctx_.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    stream_ = stub->StreamStats(&ctx_);
  }
  ~GrpcStatsStream() override {
    if (!closed_) {
      ctx_.TryCancel();
      (void)stream_->Finish();
    }
  }

  absl::StatusOr<RetentionUpdate> SendSteps(uint64_t sequence_id, uint64_t epoch,
                                            const std::vector<DecodeStep>& steps) override {
    v1::StatsMessage msg;
    msg.set_sequence_id(sequence_id);
    msg.set_epoch(epoch);
    for (const DecodeStep& step : steps) {
      v1::DecodeStep* s = msg.add_steps();
      for (const HeadStats& h : step.heads) {
        v1::HeadStats* out = s->add_heads();
        out->set_layer(h.layer);
        out->set_head(h.head);
        out->set_attended(h.attended);
        out->mutable_listed()->Add(h.listed.begin(), h.listed.end());
        out->mutable_dense()->Add(h.dense.begin(), h.dense.end());
      }
    }
    return RoundTrip(msg);
  }

  absl::StatusOr<RetentionUpdate> SendWindowScores(
      uint64_t sequence_id, uint64_t epoch, const std::vector<WindowScores>& scores) override {
    v1::StatsMessage msg;
    msg.set_sequence_id(sequence_id);
    msg.set_epoch(epoch);
    for (const WindowScores& w : scores) {
      v1::WindowScores* out = msg.add_window_scores();
      out->set_layer(w.layer);
      out->mutable_sums()->Add(w.sums.begin(), w.sums.end());
    }
    return RoundTrip(msg);
  }

  absl::Status Close() override {
    if (closed_) return final_;
    closed_ = true;
    stream_->WritesDone();
    final_ = FromGrpc(stream_->Finish());
    return final_;
  }

 private:
  absl::StatusOr<RetentionUpdate> RoundTrip(const v1::StatsMessage& msg) {
    if (closed_)
      return absl::FailedPreconditionError(
          absl::StrCat("stats stream closed: ", final_.ToString()));
    v1::RetentionUpdate resp;
    if (!stream_->Write(msg) || !stream_->Read(&resp)) {
      closed_ = true;
      final_ = FromGrpc(stream_->Finish());
      if (final_.ok()) final_ = absl::UnavailableError("stats stream ended by the daemon");
      return final_;
    }
    RetentionUpdate out;
    out.epoch = resp.epoch();
    out.steps_applied = resp.steps_applied();
    out.pages_freed = resp.pages_freed();
    for (const v1::HeadRetention& h : resp.heads()) {
      out.heads.push_back(FromProto(h));
    }
    return out;
  }

  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::StatsMessage, v1::RetentionUpdate>> stream_;
  bool closed_ = false;
  absl::Status final_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StatsStream>> Client::OpenStatsStream() {
  return std::unique_ptr<StatsStream>(new GrpcStatsStream(impl_->stub.get(), impl_->options.token));
}

LeaseKeeper::LeaseKeeper(Client* client, Lease lease) : client_(client), lease_(lease) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kvw-keepalive");
    const absl::Duration period = absl::Milliseconds(std::max<uint32_t>(1, lease_.ttl_ms / 3));
    while (!stop_.WaitForNotificationWithTimeout(period)) {
      absl::Status s = client_->KeepAlive(lease_.id);
      absl::MutexLock lock(&mu_);
      if (!s.ok()) last_error_ = s;
    }
  });
}

LeaseKeeper::~LeaseKeeper() {
  stop_.Notify();
  thread_.join();
}

absl::Status LeaseKeeper::last_error() const {
  absl::MutexLock lock(&mu_);
  return last_error_;
}

}  // namespace client
}  // namespace kvwarden
