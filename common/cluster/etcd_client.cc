#include "common/cluster/etcd_client.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace kvwarden {

absl::StatusOr<std::vector<std::string>> ParseEtcdEndpoints(absl::string_view spec) {
  absl::string_view list = spec;
  if (absl::StartsWith(list, "etcd://")) list.remove_prefix(7);
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(list, ',')) {
    const size_t colon = part.rfind(':');
    uint32_t port = 0;
    if (absl::StrContains(part, "://") || colon == absl::string_view::npos || colon == 0 ||
        !absl::SimpleAtoi(part.substr(colon + 1), &port) || port == 0 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("cluster endpoint '", part, "' is not HOST:PORT (in '", spec, "')"));
    }
    out.emplace_back(part);
  }
  return out;
}

std::string PrefixEnd(absl::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    unsigned char& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key: etcd's "\0" range end
}

struct EtcdClient::Member {
  std::string endpoint;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch;
};

namespace {

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what, const std::string& endpoint) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat("etcd ", endpoint, ": ", what, ": ", s.error_message()));
}

bool TryNext(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

}  // namespace

EtcdClient::EtcdClient(Options options) : options_(std::move(options)) {}
EtcdClient::~EtcdClient() = default;

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(Options options) {
  if (options.endpoints.empty()) return absl::InvalidArgumentError("cluster: no etcd endpoint");
  if (options.call_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("cluster: the etcd call timeout must be > 0");
  }
  if (options.tls.cert_pem.empty() != options.tls.key_pem.empty()) {
    return absl::InvalidArgumentError(
        "cluster: etcd TLS needs a client certificate and its key together");
  }
  if (!options.tls.enabled() && !options.tls.cert_pem.empty()) {
    return absl::InvalidArgumentError(
        "cluster: an etcd client certificate needs the CA of etcd's certificate (TLS on)");
  }
  std::unique_ptr<EtcdClient> c(new EtcdClient(std::move(options)));
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (c->options_.tls.enabled()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = c->options_.tls.ca_pem;
    ssl.pem_cert_chain = c->options_.tls.cert_pem;
    ssl.pem_private_key = c->options_.tls.key_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  for (const std::string& endpoint : c->options_.endpoints) {
    auto m = std::make_unique<Member>();
    m->endpoint = endpoint;
    grpc::ChannelArguments args;
    // Reconnect within a second after an etcd restart: the registration retries each
    // second, and a member that is back should be used at the next try.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    if (!c->options_.tls.server_name.empty()) {
      args.SetSslTargetNameOverride(c->options_.tls.server_name);
    }
    std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(endpoint, credentials, args);
    m->kv = etcdserverpb::KV::NewStub(channel);
    m->lease = etcdserverpb::Lease::NewStub(channel);
    m->watch = etcdserverpb::Watch::NewStub(channel);
    c->members_.push_back(std::move(m));
  }
  return c;
}

std::string EtcdClient::current_endpoint() const {
  absl::MutexLock lock(&mu_);
  return members_[current_]->endpoint;
}

// Runs fn(member, context) -> grpc::Status on the current member, then the others in
// turn while they are unreachable; the first to answer becomes current.
template <typename Fn>
absl::Status EtcdClient::Call(absl::string_view what, Fn fn) {
  size_t first;
  {
    absl::MutexLock lock(&mu_);
    first = current_;
  }
  grpc::Status last;
  for (size_t i = 0; i < members_.size(); ++i) {
    const size_t at = (first + i) % members_.size();
    Member& m = *members_[at];
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.call_timeout));
    last = fn(m, ctx);
    if (!TryNext(last)) {
      if (at != first) {
        absl::MutexLock lock(&mu_);
        current_ = at;
      }
      return FromGrpc(last, what, m.endpoint);
    }
  }
  return FromGrpc(
      last, what,
      absl::StrCat(members_.size() > 1 ? "(every member) " : "", members_[first]->endpoint));
}

absl::StatusOr<int64_t> EtcdClient::GrantLease(absl::Duration ttl) {
  etcdserverpb::LeaseGrantRequest req;
  req.set_ttl(std::max<int64_t>(1, absl::ToInt64Seconds(ttl)));
  etcdserverpb::LeaseGrantResponse resp;
  absl::Status s = Call("LeaseGrant", [&](Member& m, grpc::ClientContext& ctx) {
    return m.lease->LeaseGrant(&ctx, req, &resp);
  });
  if (!s.ok()) return s;
  if (!resp.error().empty())
    return absl::UnavailableError(absl::StrCat("etcd LeaseGrant: ", resp.error()));
  return resp.id();
}

absl::StatusOr<absl::Duration> EtcdClient::KeepAlive(int64_t lease) {
  etcdserverpb::LeaseKeepAliveResponse resp;
  bool answered = false;
  absl::Status s = Call("LeaseKeepAlive", [&](Member& m, grpc::ClientContext& ctx) {
    auto stream = m.lease->LeaseKeepAlive(&ctx);
    etcdserverpb::LeaseKeepAliveRequest req;
    req.set_id(lease);
    answered = stream->Write(req) && stream->Read(&resp);
    stream->WritesDone();
    if (answered) ctx.TryCancel();  // one renewal per stream: do not wait for the server's end
    grpc::Status st = stream->Finish();
    return answered  ? grpc::Status::OK
           : st.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "no answer")
                     : st;
  });
  if (!s.ok()) return s;
  if (resp.ttl() <= 0) return absl::NotFoundError(absl::StrCat("etcd lease ", lease, " is gone"));
  return absl::Seconds(resp.ttl());
}

absl::Status EtcdClient::Revoke(int64_t lease) {
  etcdserverpb::LeaseRevokeRequest req;
  req.set_id(lease);
  etcdserverpb::LeaseRevokeResponse resp;
  return Call("LeaseRevoke", [&](Member& m, grpc::ClientContext& ctx) {
    return m.lease->LeaseRevoke(&ctx, req, &resp);
  });
}

absl::Status EtcdClient::Put(absl::string_view key, absl::string_view value, int64_t lease) {
  etcdserverpb::PutRequest req;
  req.set_key(std::string(key));
  req.set_value(std::string(value));
  req.set_lease(lease);
  etcdserverpb::PutResponse resp;
  return Call("Put",
              [&](Member& m, grpc::ClientContext& ctx) { return m.kv->Put(&ctx, req, &resp); });
}

absl::StatusOr<std::optional<EtcdClient::KeyValue>> EtcdClient::Get(absl::string_view key) {
  etcdserverpb::RangeRequest req;
  req.set_key(std::string(key));
  etcdserverpb::RangeResponse resp;
  absl::Status s = Call(
      "Range", [&](Member& m, grpc::ClientContext& ctx) { return m.kv->Range(&ctx, req, &resp); });
  if (!s.ok()) return s;
  if (resp.kvs_size() == 0) return std::optional<KeyValue>();
  const mvccpb::KeyValue& kv = resp.kvs(0);
  return std::optional<KeyValue>(KeyValue{kv.key(), kv.value(), kv.lease(), kv.mod_revision()});
}

absl::StatusOr<std::vector<EtcdClient::KeyValue>> EtcdClient::GetPrefix(absl::string_view prefix,
                                                                        int64_t* revision) {
  etcdserverpb::RangeRequest req;
  req.set_key(std::string(prefix));
  req.set_range_end(PrefixEnd(prefix));
  etcdserverpb::RangeResponse resp;
  absl::Status s = Call(
      "Range", [&](Member& m, grpc::ClientContext& ctx) { return m.kv->Range(&ctx, req, &resp); });
  if (!s.ok()) return s;
  if (revision != nullptr) *revision = resp.header().revision();
  std::vector<KeyValue> out;
  out.reserve(resp.kvs_size());
  for (const mvccpb::KeyValue& kv : resp.kvs())
    out.push_back({kv.key(), kv.value(), kv.lease(), kv.mod_revision()});
  return out;
}

absl::StatusOr<int64_t> EtcdClient::Delete(absl::string_view key) {
  etcdserverpb::DeleteRangeRequest req;
  req.set_key(std::string(key));
  etcdserverpb::DeleteRangeResponse resp;
  absl::Status s = Call("DeleteRange", [&](Member& m, grpc::ClientContext& ctx) {
    return m.kv->DeleteRange(&ctx, req, &resp);
  });
  if (!s.ok()) return s;
  return resp.deleted();
}

absl::StatusOr<bool> EtcdClient::PutIfAbsent(absl::string_view key, absl::string_view value,
                                             int64_t lease) {
  etcdserverpb::TxnRequest req;
  etcdserverpb::Compare* absent = req.add_compare();
  absent->set_key(std::string(key));
  absent->set_target(etcdserverpb::Compare::CREATE);
  absent->set_result(etcdserverpb::Compare::EQUAL);
  absent->set_create_revision(0);  // a key that does not exist has create revision 0
  etcdserverpb::PutRequest* put = req.add_success()->mutable_request_put();
  put->set_key(std::string(key));
  put->set_value(std::string(value));
  put->set_lease(lease);
  etcdserverpb::TxnResponse resp;
  absl::Status s =
      Call("Txn", [&](Member& m, grpc::ClientContext& ctx) { return m.kv->Txn(&ctx, req, &resp); });
  if (!s.ok()) return s;
  return resp.succeeded();
}

absl::StatusOr<bool> EtcdClient::DeleteIfValue(absl::string_view key, absl::string_view value) {
  etcdserverpb::TxnRequest req;
  etcdserverpb::Compare* same = req.add_compare();
  same->set_key(std::string(key));
  same->set_target(etcdserverpb::Compare::VALUE);
  same->set_result(etcdserverpb::Compare::EQUAL);
  same->set_value(std::string(value));
  req.add_success()->mutable_request_delete_range()->set_key(std::string(key));
  etcdserverpb::TxnResponse resp;
  absl::Status s =
      Call("Txn", [&](Member& m, grpc::ClientContext& ctx) { return m.kv->Txn(&ctx, req, &resp); });
  if (!s.ok()) return s;
  return resp.succeeded();
}

void EtcdClient::WatchCancel::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  if (active_ != nullptr) active_->TryCancel();
}

void EtcdClient::MoveOnFrom(size_t member) {
  absl::MutexLock lock(&mu_);
  if (current_ == member) current_ = (member + 1) % members_.size();
}

absl::StatusOr<int64_t> EtcdClient::WatchPrefix(
    absl::string_view prefix, int64_t start_revision, absl::Duration window,
    const std::function<void(const std::vector<WatchEvent>&)>& on_events, WatchCancel* cancel) {
  size_t at;
  {
    absl::MutexLock lock(&mu_);
    at = current_;
  }
  Member& m = *members_[at];
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + window));
  {
    absl::MutexLock lock(&cancel->mu_);
    if (cancel->cancelled_) return absl::CancelledError("etcd watch cancelled");
    cancel->active_ = &ctx;
  }
  auto stream = m.watch->Watch(&ctx);
  etcdserverpb::WatchRequest req;
  etcdserverpb::WatchCreateRequest* create = req.mutable_create_request();
  create->set_key(std::string(prefix));
  create->set_range_end(PrefixEnd(prefix));
  create->set_start_revision(start_revision);
  int64_t next = start_revision;
  bool created = false;
  absl::Status outcome = absl::OkStatus();
  if (stream->Write(req)) {
    etcdserverpb::WatchResponse resp;
    std::vector<WatchEvent> events;
    while (stream->Read(&resp)) {
      if (resp.created()) created = true;
      if (resp.canceled()) {
        outcome = resp.compact_revision() > 0
                      ? absl::OutOfRangeError(absl::StrCat(
                            "etcd ", m.endpoint, ": revision ", start_revision,
                            " was compacted (oldest kept ", resp.compact_revision(), ")"))
                      : absl::UnavailableError(absl::StrCat(
                            "etcd ", m.endpoint, ": watch cancelled: ", resp.cancel_reason()));
        ctx.TryCancel();
        break;
      }
      if (resp.events_size() == 0) continue;
      events.clear();
      for (const mvccpb::Event& e : resp.events()) {
        const mvccpb::KeyValue& kv = e.kv();
        events.push_back({e.type() == mvccpb::Event::DELETE,
                          {kv.key(), kv.value(), kv.lease(), kv.mod_revision()}});
        next = std::max(next, kv.mod_revision() + 1);
      }
      on_events(events);
    }
  }
  const grpc::Status finished = stream->Finish();
  bool was_cancelled;
  {
    absl::MutexLock lock(&cancel->mu_);
    cancel->active_ = nullptr;
    was_cancelled = cancel->cancelled_;
  }
  if (was_cancelled) return absl::CancelledError("etcd watch cancelled");
  if (!outcome.ok()) return outcome;
  // The window's end is the normal one; a member that never created the watch is left.
  if (created && (finished.ok() || finished.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
                  finished.error_code() == grpc::StatusCode::CANCELLED)) {
    return next;
  }
  MoveOnFrom(at);
  if (finished.ok() || finished.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::DeadlineExceededError(absl::StrCat(
        "etcd ", m.endpoint, ": the watch was not created within ", absl::FormatDuration(window)));
  }
  return FromGrpc(finished, "Watch", m.endpoint);
}

}  // namespace kvwarden
