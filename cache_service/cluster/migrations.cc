#include "cache_service/cluster/migrations.h"

#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/cluster/cluster_view.h"
#include "cache_service/cluster/sequence_image_proto.h"
#include "cache_service/cluster/serial_worker.h"
#include "cache_service/retention/registry.h"
#include "cache_service/util/log.h"
#include "common/cluster/cluster_keys.h"
#include "common/cluster/entry_json.h"
#include "common/net/tcp_data_channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "kvwarden/v1/cluster.pb.h"

namespace kvwarden {
namespace {

constexpr absl::Duration kDefaultHold = absl::Seconds(30);
constexpr absl::Duration kMaxHold = absl::Minutes(5);
// The source's lease on the pages outlives the target's whole adoption: the target
// reads within kPullDeadline of the request, the source waits kAdoptDeadline for it.
constexpr absl::Duration kMigrationTtl = kMaxTransferTtl;
constexpr absl::Duration kAdoptDeadline = absl::Seconds(50);
constexpr absl::Duration kPullDeadline = absl::Seconds(45);

absl::Status FromGrpc(const grpc::Status& s, absl::string_view node) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat("node '", node, "': ", s.error_message()));
}

}  // namespace

Migrations::Migrations(Options options)
    : options_(std::move(options)),
      out_(std::make_unique<SerialWorker>("kvw-migrate-out")),
      in_(std::make_unique<SerialWorker>("kvw-migrate-in")) {}

Migrations::~Migrations() { Stop(); }

void Migrations::Stop() {
  stopping_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (adopt_call_ != nullptr) adopt_call_->TryCancel();
  }
  out_.reset();
  in_.reset();
}

void Migrations::SetAdvertisedHost(std::string host) {
  std::lock_guard<std::mutex> lock(mu_);
  advertised_host_ = std::move(host);
}

void Migrations::MigrateOut(const Caller& caller, const v1::MigrateSequenceRequest& req,
                            OutDone done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    int& pending = pending_out_[caller.tenant];
    if (pending >= kMaxPendingPerTenant) {
      done(absl::ResourceExhaustedError(absl::StrCat(
          kMaxPendingPerTenant,
          " migrations of this tenant wait or run on this node already; retry later")));
      return;
    }
    ++pending;
  }
  auto finished = [this, tenant = caller.tenant] {
    std::lock_guard<std::mutex> lock(mu_);
    if (--pending_out_[tenant] == 0) pending_out_.erase(tenant);
  };
  auto job = [this, caller, req, done, finished](bool cancelled) {
    if (cancelled) {
      finished();
      done(absl::UnavailableError("the daemon is stopping; the sequence was not migrated"));
      return;
    }
    absl::StatusOr<v1::MigrateSequenceResponse> r = RunOut(caller, req);
    finished();
    if (options_.on_result)
      options_.on_result(true, r.status().code(), r.ok() ? r->bytes_moved() : 0);
    done(std::move(r));
  };
  if (!out_->Post(std::move(job))) {
    finished();
    done(absl::ResourceExhaustedError(absl::StrCat(
        SerialWorker::kMaxPending, " migrations wait on this node already; retry later")));
  }
}

void Migrations::AdoptIn(absl::string_view authorization, const v1::AdoptSequenceRequest& req,
                         InDone done) {
  if (!options_.auth->IsPeer(authorization)) {
    done(absl::UnauthenticatedError(
        options_.auth->accepts_peers()
            ? "the cluster's peer token is required"
            : "this node takes no migrations: cluster.peer_token is not set"));
    return;
  }
  auto job = [this, req, done](bool cancelled) {
    if (cancelled) {
      done(absl::UnavailableError("the daemon is stopping; nothing was adopted"));
      return;
    }
    absl::StatusOr<v1::AdoptSequenceResponse> r = RunIn(req);
    if (options_.on_result) options_.on_result(false, r.status().code(), r.ok() ? r->bytes() : 0);
    done(std::move(r));
  };
  if (!in_->Post(std::move(job))) {
    done(absl::ResourceExhaustedError(absl::StrCat(
        SerialWorker::kMaxPending, " adoptions wait on this node already; retry later")));
  }
}

absl::StatusOr<v1::MigrateSequenceResponse> Migrations::RunOut(
    const Caller& caller, const v1::MigrateSequenceRequest& req) {
  const absl::Time started = absl::Now();
  if (options_.peer_token.empty()) {
    return absl::FailedPreconditionError(
        "migrations need the cluster's peer token (cluster.peer_token_file)");
  }
  if (options_.data_port == 0) {
    return absl::FailedPreconditionError(
        "migrations need this daemon's TCP data path (data_plane.disable_tcp is set)");
  }
  const std::string& target = req.target_node();
  if (target.empty()) return absl::InvalidArgumentError("target_node: is required");
  if (target == options_.node) {
    return absl::InvalidArgumentError(absl::StrCat("target_node: '", target, "' is this node"));
  }
  const absl::Duration hold = req.hold_ms() == 0 ? kDefaultHold : absl::Milliseconds(req.hold_ms());
  if (hold > kMaxHold) {
    return absl::InvalidArgumentError(
        absl::StrCat("hold_ms: at most ", absl::ToInt64Milliseconds(kMaxHold)));
  }
  std::string host;
  {
    std::lock_guard<std::mutex> lock(mu_);
    host = advertised_host_;
  }
  if (host.empty()) return absl::UnavailableError("this node has not joined the cluster yet");

  absl::StatusOr<v1::NodeInfo> node = FindNode(target);
  if (!node.ok()) return node.status();

  absl::StatusOr<MigrationStart> m =
      options_.table->BeginMigration(req.sequence_id(), caller, kMigrationTtl);
  if (!m.ok()) return m.status();
  v1::AdoptSequenceRequest adopt;
  if (absl::Status s = ImageToProto(m->image, *options_.ledger, adopt.mutable_image()); !s.ok()) {
    (void)options_.table->EndMigration(m->transfer, req.sequence_id(), /*adopted=*/false);
    return s;
  }
  adopt.mutable_image()->set_handle(options_.handles->HandleOf(req.sequence_id()));
  adopt.set_source_node(options_.node);
  adopt.set_data_host(host);
  adopt.set_data_port(options_.data_port);
  adopt.set_transfer_id(m->transfer);
  adopt.set_data_secret(std::string(m->secret.begin(), m->secret.end()));
  adopt.set_lease_id(req.target_lease_id());
  adopt.set_hold_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(hold)));

  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(node->grpc_address(), options_.peer_credentials);
  std::unique_ptr<v1::PeerService::Stub> stub = v1::PeerService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kAdoptDeadline));
  ctx.AddMetadata("authorization", absl::StrCat("Bearer ", options_.peer_token));
  v1::AdoptSequenceResponse adopted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    adopt_call_ = &ctx;
  }
  if (stopping_) ctx.TryCancel();
  const grpc::Status call = stub->AdoptSequence(&ctx, adopt, &adopted);
  {
    std::lock_guard<std::mutex> lock(mu_);
    adopt_call_ = nullptr;
  }
  if (!call.ok()) {
    (void)options_.table->EndMigration(m->transfer, req.sequence_id(), /*adopted=*/false);
    return FromGrpc(call, target);
  }
  if (absl::Status s =
          options_.table->EndMigration(m->transfer, req.sequence_id(), /*adopted=*/true);
      !s.ok()) {
    LogEvent(LogLevel::kWarning, "migration_lease_ended")
        .Field("sequence", req.sequence_id())
        .Field("target", target)
        .Field("detail", s.message());
  }
  v1::MigrateSequenceResponse out;
  out.set_node(target);
  out.set_grpc_address(node->grpc_address());
  out.set_sequence_id(adopted.sequence_id());
  out.set_lease_id(adopted.lease_id());
  out.set_bytes_moved(adopted.bytes());
  out.set_duration_us(absl::ToInt64Microseconds(absl::Now() - started));
  LogEvent(LogLevel::kInfo, "sequence_migrated")
      .Field("sequence", req.sequence_id())
      .Field("target", target)
      .Field("target_sequence", adopted.sequence_id())
      .Field("bytes", adopted.bytes())
      .Field("ms", absl::ToInt64Milliseconds(absl::Now() - started));
  return out;
}

absl::StatusOr<v1::NodeInfo> Migrations::FindNode(const std::string& name) const {
  if (options_.view != nullptr) {
    if (std::optional<v1::NodeInfo> mirrored = options_.view->Node(name)) return *mirrored;
  }
  const std::string key = NodeKey(options_.key_prefix, name);
  absl::StatusOr<std::optional<EtcdClient::KeyValue>> entry = options_.etcd->Get(key);
  if (!entry.ok()) return absl::UnavailableError(absl::StrCat("etcd: ", entry.status().message()));
  if (!entry->has_value()) {
    return absl::NotFoundError(
        absl::StrCat("node '", name, "' is not in the cluster (no entry at ", key, ")"));
  }
  v1::NodeInfo node;
  if (!ParseEntry((*entry)->value, &node) || node.grpc_address().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("node '", name, "': its entry at ", key, " is not a NodeInfo"));
  }
  return node;
}

absl::StatusOr<v1::AdoptSequenceResponse> Migrations::RunIn(const v1::AdoptSequenceRequest& req) {
  const absl::Time deadline = absl::Now() + kPullDeadline;
  // Pages are read only from the source node's own address: a peer cannot point this
  // daemon at another host to read from (or probe) it.
  absl::StatusOr<v1::NodeInfo> source = FindNode(req.source_node());
  if (!source.ok()) {
    return absl::Status(source.status().code(),
                        absl::StrCat("source node: ", source.status().message()));
  }
  if (net::TargetHost(source->grpc_address()) != req.data_host()) {
    return absl::PermissionDeniedError(
        absl::StrCat("data_host '", req.data_host(), "' is not the address of source node '",
                     req.source_node(), "' (", source->grpc_address(), ")"));
  }
  const v1::SequenceImage& wire = req.image();
  const std::optional<TenantId> tenant = options_.ledger->Find(wire.tenant());
  if (!tenant) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tenant '", wire.tenant(), "' is not configured on node '", options_.node, "'"));
  }
  absl::StatusOr<PagePool*> pool = options_.pools->Find(wire.pool());
  if (!pool.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("node '", options_.node, "' has no pool '", wire.pool(), "'"));
  }
  if ((*pool)->draining()) {
    return absl::UnavailableError(
        absl::StrCat("pool '", wire.pool(), "' of node '", options_.node, "' is draining"));
  }
  absl::StatusOr<SequenceImage> image = ImageFromProto(wire);
  if (!image.ok()) return image.status();
  absl::StatusOr<RetentionPolicy> policy =
      PolicyFromProto(wire.policy(), (*pool)->layout(), "image.policy");
  if (!policy.ok()) return policy.status();
  if (req.data_secret().size() != net::kDataSecretBytes || req.data_port() == 0 ||
      req.data_port() > 65535) {
    return absl::InvalidArgumentError("data_secret/data_port: not a TCP data path grant");
  }
  net::DataSecret secret;
  std::copy(req.data_secret().begin(), req.data_secret().end(), secret.begin());

  LeaseId lease = req.lease_id();
  LeaseId hold = 0;
  if (lease == 0) {
    const absl::Duration ttl =
        req.hold_ms() == 0 ? kDefaultHold : std::min(absl::Milliseconds(req.hold_ms()), kMaxHold);
    absl::StatusOr<LeaseInfo> held = options_.leases->Register(
        *tenant, absl::StrCat("migrated from ", req.source_node()), WorkerRole::kBoth, ttl);
    if (!held.ok()) return held.status();
    lease = hold = held->id;
  }
  auto fail = [&](absl::Status s) {
    if (hold != 0) (void)options_.leases->Release(hold, *tenant);
    return s;
  };

  absl::StatusOr<net::TcpDataChannel> channel = net::TcpDataChannel::Connect(
      req.data_host(), static_cast<uint16_t>(req.data_port()), deadline);
  if (!channel.ok()) {
    return fail(absl::UnavailableError(
        absl::StrCat("node '", req.source_node(), "': ", channel.status().message())));
  }
  PagePool& p = **pool;
  const size_t page_bytes = p.page_bytes();
  const bool host_memory = p.device() == "cpu";
  std::string staging;
  SequenceTable::AdoptArgs args{*tenant, lease, &p, *policy, &*image};
  absl::StatusOr<SequenceId> id =
      options_.table->Adopt(args, [&](uint32_t layer, absl::Span<const PageId> pages) {
        if (stopping_) return absl::UnavailableError("the daemon is stopping; nothing was adopted");
        std::vector<net::TcpPageOp> ops;
        if (host_memory) {
          // Straight into the pages: one request per run of pages adjacent in memory.
          for (uint32_t i = 0; i < pages.size(); ++i) {
            uint8_t* at = p.PageData(pages[i]);
            if (!ops.empty() && ops.back().buf + size_t{ops.back().page_count} * page_bytes == at) {
              ++ops.back().page_count;
            } else {
              ops.push_back({layer, i, 1, at});
            }
          }
        } else {
          staging.resize(pages.size() * page_bytes);
          ops.push_back({layer, 0, static_cast<uint32_t>(pages.size()),
                         reinterpret_cast<uint8_t*>(staging.data())});
        }
        absl::Status moved =
            channel->Move(req.transfer_id(), secret, /*write=*/false, page_bytes, ops, deadline);
        if (!moved.ok()) {
          return absl::Status(moved.code(),
                              absl::StrCat("node '", req.source_node(), "': ", moved.message()));
        }
        if (!host_memory) {
          for (size_t i = 0; i < pages.size(); ++i) {
            const auto* src = reinterpret_cast<const uint8_t*>(staging.data()) + i * page_bytes;
            if (absl::Status s = p.device_ops().CopyFromHost(p.PageData(pages[i]), src, page_bytes);
                !s.ok())
              return s;
          }
        }
        return absl::OkStatus();
      });
  if (!id.ok()) return fail(id.status());
  if (!wire.handle().empty()) {
    // The handle follows the sequence here before the source lets go of it.
    if (absl::Status s = options_.handles->PublishAdopted(*tenant, *id, wire.handle()); !s.ok()) {
      (void)options_.table->Release(*id, *tenant);
      return fail(s);
    }
  }
  uint64_t pages = 0;
  for (uint32_t n : image->layer_pages) pages += n;
  v1::AdoptSequenceResponse out;
  out.set_sequence_id(*id);
  out.set_lease_id(lease);
  out.set_bytes(pages * page_bytes);
  LogEvent(LogLevel::kInfo, "sequence_adopted")
      .Field("sequence", *id)
      .Field("source", req.source_node())
      .Field("source_sequence", wire.source_sequence_id())
      .Field("tenant", wire.tenant())
      .Field("bytes", pages * page_bytes);
  return out;
}

}  // namespace kvwarden
