// DataPlane: pages moved by UCX RMA against the daemon's registered chunks (shared
// memory, same host), or through the daemon-served TCP data path (TcpDataChannel) when
// transports are "tcp" or UCX cannot reach the daemon (another host).
//
// One UCX worker per DataPlane, used under one mutex (UCX workers here are
// single-threaded), so a DataPlane is thread-safe and operations on it serialize.
// Recovery: every lease answer names the daemon instance; a new instance (daemon
// restarted) or a failed endpoint rebuilds the endpoint and drops remote keys before any
// RMA is issued again. gRPC UNAVAILABLE (daemon down or restarting) is retried with
// backoff until the operation's deadline.

#include "kvwarden/data_plane.h"

#include <algorithm>
#include <optional>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/net/tcp_data_channel.h"
#include "common/sync/plain_mutex.h"
#include "common/ucx/ucx.h"
#include "end_lease.h"

namespace kvwarden {
namespace client {
namespace {

// Calls `fn` until it answers something other than UNAVAILABLE or `deadline` passes.
template <typename Fn>
auto RetryUnavailable(Client& client, Fn&& fn, absl::Time deadline) -> decltype(fn()) {
  absl::Duration backoff = absl::Milliseconds(20);
  for (;;) {
    auto result = fn();
    if (result.ok() || !absl::IsUnavailable(result.status()) || absl::Now() + backoff > deadline) {
      return result;
    }
    client.AwaitConnected(backoff);
    backoff = std::min(backoff * 2, absl::Milliseconds(500));
  }
}

// Pages [page, page + count) of `layers` layers from layer index `layer` lie in the grant
// (checked before any byte moves, on either path).
absl::Status CheckInGrant(const TransferGrant& g, uint32_t layer, uint32_t layers, uint32_t page,
                          uint32_t count) {
  if (uint64_t{layer} + layers > g.layers.size() || uint64_t{page} + count > g.num_pages ||
      count == 0) {
    return absl::OutOfRangeError(absl::StrFormat(
        "pages [%u, %d) of layer index %u are outside the transfer (%d layers x %u pages)", page,
        uint64_t{page} + count, layer, g.layers.size(), g.num_pages));
  }
  return absl::OkStatus();
}

// Chunk ids with the top bit name a per-transfer staging buffer (transfer.proto).
bool IsStaging(uint32_t chunk) { return (chunk & (1u << 31)) != 0; }

}  // namespace

struct DataPlane::Impl {
  // In-flight RMA requests of one operation: usually one run, so no heap allocation.
  using Requests = absl::InlinedVector<ucs_status_ptr_t, 4>;

  Client* client = nullptr;
  DataPlaneOptions options;
  // The pool's shape as of Connect: read without the lock (a restarted daemon serving
  // another shape would refuse every range anyway).
  Layout layout;
  size_t page_bytes = 0;
  std::atomic<uint64_t> lease{0};

  mutable PlainMutex mu;
  // The TCP data path instead of UCX: asked for ("tcp"), or UCX could not reach the
  // daemon with the default transports.
  bool use_tcp = false;
  std::optional<net::TcpDataChannel> tcp;
  ucx::Context context;
  ucx::Worker worker;
  DataPlaneInfo info;  // the instance the endpoint talks to
  std::optional<ucx::Endpoint> ep;
  struct Key {
    uint64_t generation = 0;
    uint64_t remote_address = 0;
    uint64_t size = 0;
    ucx::RemoteKey rkey;
  };
  absl::flat_hash_map<uint32_t, Key> keys;
  uint64_t reconnects = 0;

  // (Re)resolves the daemon and builds a fresh endpoint; drops every remote key.
  absl::Status ConnectLocked(absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    absl::StatusOr<DataPlaneInfo> got = RetryUnavailable(
        *client, [&] { return client->GetDataPlane(options.pool); }, deadline);
    if (!got.ok()) return got.status();
    if (got->ucx_worker_address.empty()) {
      return absl::FailedPreconditionError(
          "kvwardend runs without UCX (data_plane.disable_ucx); use WriteKV/ReadKV or attach");
    }
    keys.clear();
    ep.reset();
    tcp.reset();
    if (!use_tcp) {
      absl::StatusOr<ucx::Endpoint> made = ucx::Endpoint::Connect(
          worker, got->ucx_worker_address, !ucx::UsesSharedMemory(options.transports));
      if (made.ok()) {
        if (!info.instance_id.empty()) ++reconnects;
        ep = *std::move(made);
        info = *std::move(got);
        return absl::OkStatus();
      }
      // The daemon's UCX is shared memory only: from another host, the TCP data path.
      if (!options.transports.empty() || got->tcp_data_port == 0) return made.status();
      use_tcp = true;
    }
    if (!info.instance_id.empty()) ++reconnects;
    info = *std::move(got);
    return ConnectTcpLocked(deadline);
  }

  absl::Status ConnectTcpLocked(absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    tcp.reset();
    if (info.tcp_data_port == 0) {
      return absl::FailedPreconditionError(
          "kvwardend serves no TCP data path (data_plane.disable_tcp)");
    }
    const std::string host = net::TargetHost(client->options().target);
    if (host.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the TCP data path needs a host to connect to; the target is ",
                       client->options().target));
    }
    absl::StatusOr<net::TcpDataChannel> ch =
        net::TcpDataChannel::Connect(host, info.tcp_data_port, deadline);
    if (!ch.ok()) return ch.status();
    tcp = *std::move(ch);
    return absl::OkStatus();
  }

  bool ConnectedLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    return use_tcp ? (tcp && !tcp->broken()) : (ep && !ep->failed());
  }

  // One grant's layers over the TCP data path, all requests in flight together.
  absl::Status TcpMoveLocked(const TransferGrant& g, TransferMode mode, uint32_t layer,
                             uint32_t layers, uint32_t page, uint32_t count, uint8_t* buf,
                             absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (g.data_secret.size() != net::kDataSecretBytes) {
      return absl::InternalError("the grant has no TCP data secret (an older kvwardend?)");
    }
    if (absl::Status s = CheckInGrant(g, layer, layers, page, count); !s.ok()) return s;
    if (!tcp || tcp->broken()) {
      if (absl::Status s = ConnectTcpLocked(deadline); !s.ok()) return s;
    }
    net::DataSecret secret;
    std::copy(g.data_secret.begin(), g.data_secret.end(), secret.begin());
    absl::InlinedVector<net::TcpPageOp, 8> ops;
    for (uint32_t l = 0; l < layers; ++l) {
      ops.push_back({layer + l, page, count, buf + size_t{l} * count * g.page_bytes});
    }
    return tcp->Move(g.id, secret, mode == TransferMode::kWrite, g.page_bytes, ops, deadline);
  }

  void DropEndpointLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    keys.clear();
    ep.reset();
    tcp.reset();
  }

  std::vector<ChunkRef> KnownLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    std::vector<ChunkRef> out;
    for (const auto& [chunk, key] : keys) out.push_back({chunk, key.generation});
    return out;
  }

  // A lease whose remote keys are all installed on the current endpoint.
  absl::StatusOr<TransferGrant> BeginLocked(const PageRange& range, TransferMode mode,
                                            absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (int round = 0; round < 3; ++round) {
      if (!ConnectedLocked()) {
        if (absl::Status s = ConnectLocked(deadline); !s.ok()) return s;
      }
      const std::vector<ChunkRef> known = KnownLocked();
      absl::StatusOr<TransferGrant> grant = RetryUnavailable(
          *client,
          [&] {
            return client->BeginTransfer(lease.load(), range, mode, options.transfer_ttl_ms, known,
                                         use_tcp ? TransferPath::kTcp : TransferPath::kUcx);
          },
          deadline);
      if (!grant.ok()) {
        if (absl::IsNotFound(grant.status()) || absl::IsFailedPrecondition(grant.status())) {
          // A sequence or lease that vanished may mean the daemon restarted: say so.
          absl::StatusOr<DataPlaneInfo> now = client->GetDataPlane(options.pool);
          if (now.ok() && now->instance_id != info.instance_id) {
            const std::string before = info.instance_id;
            if (absl::Status s = ConnectLocked(deadline); !s.ok()) return s;
            return absl::UnavailableError(absl::StrFormat(
                "kvwardend restarted (instance %s -> %s): %s; sequences and leases of the old "
                "instance are gone",
                before.substr(0, 8), info.instance_id.substr(0, 8), grant.status().message()));
          }
        }
        return grant.status();
      }
      if (grant->instance_id != info.instance_id) {
        (void)client->EndTransfer(grant->id);
        if (absl::Status s = ConnectLocked(deadline); !s.ok()) return s;
        continue;
      }
      if (use_tcp) return grant;
      absl::Status installed = InstallKeysLocked(*grant);
      if (installed.ok()) return grant;
      (void)client->EndTransfer(grant->id);
      if (!absl::IsAborted(installed)) return installed;
      keys.clear();  // a key we thought we had is stale: ask for all of them again
    }
    return absl::UnavailableError("data plane: could not settle on one daemon instance");
  }

  absl::Status InstallKeysLocked(const TransferGrant& grant) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (const ChunkKeyInfo& k : grant.keys) {
      // UCX does not validate packed keys (a corrupted one can crash ucp_ep_rkey_unpack),
      // so a key is unpacked only if it matches what the grant names.
      const bool named = std::any_of(
          grant.chunks.begin(), grant.chunks.end(),
          [&](const ChunkRef& c) { return c.chunk == k.chunk && c.generation == k.generation; });
      const uint64_t expected = IsStaging(k.chunk)
                                    ? grant.layers.size() * grant.num_pages * grant.page_bytes
                                    : info.chunk_bytes;
      if (!named || k.size != expected || k.remote_address == 0 || k.rkey.empty()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "remote key for chunk %u (generation %d, %d bytes at 0x%x) does not match the grant",
            k.chunk, k.generation, k.size, k.remote_address));
      }
      absl::StatusOr<ucx::RemoteKey> rkey = ucx::RemoteKey::Unpack(*ep, k.rkey);
      if (!rkey.ok()) {
        return absl::Status(rkey.status().code(),
                            absl::StrCat("chunk ", k.chunk, ": ", rkey.status().message()));
      }
      keys[k.chunk] = Key{k.generation, k.remote_address, k.size, *std::move(rkey)};
    }
    for (const ChunkRef& c : grant.chunks) {
      auto it = keys.find(c.chunk);
      if (it == keys.end() || it->second.generation != c.generation) {
        return absl::AbortedError(absl::StrCat("no current remote key for chunk ", c.chunk));
      }
    }
    return absl::OkStatus();
  }

  // Issues RMAs for pages [page, page + count) of the grant's layer `layer` to/from buf.
  absl::Status IssueLocked(const TransferGrant& g, TransferMode mode, uint32_t layer, uint32_t page,
                           uint32_t count, uint8_t* buf, Requests* reqs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (absl::Status s = CheckInGrant(g, layer, 1, page, count); !s.ok()) return s;
    uint32_t at = 0;  // page index of the run's first page within the layer
    for (const PageRunInfo& run : g.layers[layer]) {
      const uint32_t lo = std::max(at, page), hi = std::min(at + run.pages, page + count);
      at += run.pages;
      if (lo >= hi) continue;
      const Key& key = keys.at(run.chunk);
      const uint64_t offset = run.offset + uint64_t{lo - (at - run.pages)} * g.page_bytes;
      const size_t length = size_t{hi - lo} * g.page_bytes;
      if (offset + length > key.size) {
        return absl::InternalError(absl::StrCat("run past the end of chunk ", run.chunk));
      }
      uint8_t* local = buf + size_t{lo - page} * g.page_bytes;
      ucp_request_param_t param{};
      ucs_status_ptr_t req = mode == TransferMode::kWrite
                                 ? ucp_put_nbx(ep->get(), local, length,
                                               key.remote_address + offset, key.rkey.get(), &param)
                                 : ucp_get_nbx(ep->get(), local, length,
                                               key.remote_address + offset, key.rkey.get(), &param);
      if (UCS_PTR_IS_ERR(req)) return ucx::FromUcs(UCS_PTR_STATUS(req), "RMA");
      if (req != nullptr) reqs->push_back(req);
    }
    return absl::OkStatus();
  }

  absl::Status WaitLocked(Requests& reqs, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    absl::Status first;
    for (ucs_status_ptr_t r : reqs) first.Update(ucx::Wait(worker, r, "RMA", deadline));
    reqs.clear();
    return first;
  }

  // One operation of a held Transfer.
  absl::Status MovePagesLocked(const TransferGrant& g, TransferMode granted, TransferMode mode,
                               uint32_t layer, uint32_t page, uint32_t count, uint8_t* buf,
                               bool ended) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (ended) return absl::FailedPreconditionError("the transfer has ended");
    // One clock read per operation (~57 ns each in a VM: a tenth of a 64 KiB get).
    const absl::Time now = absl::Now();
    // Past its expiry the pages are no longer pinned: they may be compacted or reused.
    if (now >= g.expires) {
      return absl::AbortedError(
          absl::StrFormat("transfer lease %d expired at %s; begin a new transfer", g.id,
                          absl::FormatTime(g.expires)));
    }
    if (mode == TransferMode::kWrite && granted != TransferMode::kWrite) {
      return absl::FailedPreconditionError("the transfer was begun for reading");
    }
    if (use_tcp) {
      if (info.instance_id != g.instance_id) {
        return absl::UnavailableError(
            "the daemon restarted since this transfer began; begin again");
      }
      return TcpMoveLocked(g, mode, layer, 1, page, count, buf, now + options.op_timeout);
    }
    if (!ep || info.instance_id != g.instance_id) {
      return absl::UnavailableError(
          "the endpoint was rebuilt since this transfer began; begin again");
    }
    Requests reqs;
    absl::Status s = IssueLocked(g, mode, layer, page, count, buf, &reqs);
    s.Update(WaitLocked(reqs, now + options.op_timeout));
    if (absl::IsUnavailable(s) || ep->failed()) DropEndpointLocked();
    return s;
  }

  absl::Status EndLeaseLocked(const TransferGrant& g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (const ChunkRef& c : g.chunks) {
      if (IsStaging(c.chunk)) keys.erase(c.chunk);  // its buffer goes with the lease
    }
    return EndLease(*client, g.id);
  }
};

DataPlane::DataPlane(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DataPlane::~DataPlane() {
  PlainMutexLock lock(&impl_->mu);
  impl_->keys.clear();
  impl_->ep.reset();  // before the worker and context go
}

absl::StatusOr<std::unique_ptr<DataPlane>> DataPlane::Connect(Client* client, uint64_t lease_id,
                                                              const DataPlaneOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->client = client;
  impl->options = options;
  impl->lease = lease_id;
  impl->use_tcp = options.transports == "tcp";
  if (!impl->use_tcp) {
    ucx::ContextOptions context_options;
    context_options.transports = options.transports;
    absl::StatusOr<ucx::Context> context = ucx::Context::Create(context_options);
    if (!context.ok()) return context.status();
    impl->context = *std::move(context);
    absl::StatusOr<ucx::Worker> worker = ucx::Worker::Create(impl->context);
    if (!worker.ok()) return worker.status();
    impl->worker = *std::move(worker);
  }
  {
    PlainMutexLock lock(&impl->mu);
    if (absl::Status s = impl->ConnectLocked(absl::Now() + options.op_timeout); !s.ok()) return s;
    impl->layout = impl->info.layout;
    impl->page_bytes = impl->info.page_bytes;
  }
  return std::unique_ptr<DataPlane>(new DataPlane(std::move(impl)));
}

const Layout& DataPlane::layout() const { return impl_->layout; }
size_t DataPlane::page_bytes() const { return impl_->page_bytes; }
void DataPlane::SetLease(uint64_t lease_id) { impl_->lease = lease_id; }
uint64_t DataPlane::reconnects() const {
  PlainMutexLock lock(&impl_->mu);
  return impl_->reconnects;
}

std::string DataPlane::DescribeEndpoint() const {
  PlainMutexLock lock(&impl_->mu);
  if (impl_->use_tcp) {
    return absl::StrCat("kvwarden TCP data path to ",
                        net::TargetHost(impl_->client->options().target), ":",
                        impl_->info.tcp_data_port, impl_->tcp ? "" : " (not connected)");
  }
  return impl_->ep ? impl_->ep->Describe() : "";
}

namespace {

absl::Status CheckBufferSize(const char* name, size_t given, const PageRange& range,
                             const Layout& layout) {
  if (given == RangeBytes(range, layout)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: %d bytes given, the range needs %d (%u layers x %u pages x %d bytes)", name, given,
      RangeBytes(range, layout), range.layer_count, RangePages(range, layout), PageBytes(layout)));
}

}  // namespace

absl::Status DataPlane::Put(const PageRange& range, absl::Span<const uint8_t> src) {
  if (absl::Status s = CheckBufferSize("src", src.size(), range, layout()); !s.ok()) return s;
  TransferRequest r;
  r.range = range;
  r.mode = TransferMode::kWrite;
  r.buffer = const_cast<uint8_t*>(src.data());  // only read from for writes
  Submit(absl::MakeSpan(&r, 1));
  return r.status;
}

absl::StatusOr<uint64_t> DataPlane::Get(const PageRange& range, absl::Span<uint8_t> dst) {
  if (absl::Status s = CheckBufferSize("dst", dst.size(), range, layout()); !s.ok()) return s;
  TransferRequest r;
  r.range = range;
  r.mode = TransferMode::kRead;
  r.buffer = dst.data();
  Submit(absl::MakeSpan(&r, 1));
  if (!r.status.ok()) return r.status;
  return r.epoch;
}

void DataPlane::Submit(absl::Span<TransferRequest> requests) {
  Impl& d = *impl_;
  PlainMutexLock lock(&d.mu);
  const absl::Time deadline = absl::Now() + d.options.op_timeout;
  std::vector<bool> done(requests.size(), false);
  for (TransferRequest& r : requests) {
    r.status =
        r.buffer == nullptr ? absl::InvalidArgumentError("buffer: is null") : absl::OkStatus();
  }
  for (int attempt = 1; attempt <= d.options.max_attempts; ++attempt) {
    std::vector<std::pair<size_t, TransferGrant>> active;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (done[i] || (!requests[i].status.ok() && !absl::IsUnavailable(requests[i].status))) {
        continue;
      }
      absl::StatusOr<TransferGrant> g =
          d.BeginLocked(requests[i].range, requests[i].mode, deadline);
      if (!g.ok()) {
        requests[i].status = g.status();
        done[i] = true;
        continue;
      }
      requests[i].epoch = g->epoch;
      active.emplace_back(i, *std::move(g));
    }
    // Issue everything, then wait: the RMAs of all requests overlap.
    std::vector<Impl::Requests> reqs(active.size());
    std::vector<absl::Status> result(active.size());
    bool any_write = false;
    for (size_t a = 0; a < active.size() && d.use_tcp; ++a) {
      TransferRequest& r = requests[active[a].first];
      const TransferGrant& g = active[a].second;
      result[a] = d.TcpMoveLocked(g, r.mode, 0, static_cast<uint32_t>(g.layers.size()), 0,
                                  g.num_pages, r.buffer, deadline);
    }
    for (size_t a = 0; a < active.size() && !d.use_tcp; ++a) {
      TransferRequest& r = requests[active[a].first];
      const TransferGrant& g = active[a].second;
      any_write |= r.mode == TransferMode::kWrite;
      for (uint32_t layer = 0; layer < g.layers.size() && result[a].ok(); ++layer) {
        result[a] = d.IssueLocked(g, r.mode, layer, 0, g.num_pages,
                                  r.buffer + size_t{layer} * g.num_pages * g.page_bytes, &reqs[a]);
      }
    }
    for (size_t a = 0; a < active.size(); ++a) result[a].Update(d.WaitLocked(reqs[a], deadline));
    absl::Status flushed;
    if (any_write && d.ep) flushed = d.ep->Flush(deadline);
    bool endpoint_broken = d.use_tcp ? (d.tcp && d.tcp->broken()) : (d.ep && d.ep->failed());
    bool retry = false;
    for (size_t a = 0; a < active.size(); ++a) {
      const size_t i = active[a].first;
      TransferRequest& r = requests[i];
      if (r.mode == TransferMode::kWrite) result[a].Update(flushed);
      const absl::Status ended = d.EndLeaseLocked(active[a].second);
      if (result[a].ok()) result[a] = ended;
      endpoint_broken |= absl::IsUnavailable(result[a]);
      if (absl::IsUnavailable(result[a]) && r.idempotent && attempt < d.options.max_attempts) {
        r.status = result[a];
        retry = true;
        continue;
      }
      if (absl::IsUnavailable(result[a]) && !r.idempotent) {
        result[a] = absl::UnavailableError(absl::StrCat(
            "transfer of sequence ", r.range.sequence_id, " broke off (", result[a].message(),
            ") and is marked non-idempotent, so it was not re-issued"));
      }
      r.status = result[a];
      done[i] = true;
    }
    if (endpoint_broken) d.DropEndpointLocked();
    if (!retry) return;
  }
}

// --- Transfer: one lease, many operations ---

struct DataPlane::Transfer::State {
  DataPlane::Impl* dp = nullptr;
  TransferGrant grant;
  TransferMode mode = TransferMode::kRead;
  bool ended = false;
};

DataPlane::Transfer::Transfer(std::unique_ptr<State> state) : state_(std::move(state)) {}
DataPlane::Transfer::~Transfer() { (void)End(); }
uint64_t DataPlane::Transfer::id() const { return state_->grant.id; }
absl::Time DataPlane::Transfer::expires() const { return state_->grant.expires; }
uint64_t DataPlane::Transfer::epoch() const { return state_->grant.epoch; }
uint32_t DataPlane::Transfer::num_pages() const { return state_->grant.num_pages; }
uint32_t DataPlane::Transfer::first_page() const { return state_->grant.first_page; }

absl::StatusOr<std::unique_ptr<DataPlane::Transfer>> DataPlane::Begin(const PageRange& range,
                                                                      TransferMode mode) {
  PlainMutexLock lock(&impl_->mu);
  absl::StatusOr<TransferGrant> g =
      impl_->BeginLocked(range, mode, absl::Now() + impl_->options.op_timeout);
  if (!g.ok()) return g.status();
  auto state = std::make_unique<Transfer::State>();
  state->dp = impl_.get();
  state->grant = *std::move(g);
  state->mode = mode;
  return std::unique_ptr<Transfer>(new Transfer(std::move(state)));
}

absl::Status DataPlane::Transfer::WritePages(uint32_t layer, uint32_t page, uint32_t count,
                                             const uint8_t* buf) {
  Impl& d = *state_->dp;
  PlainMutexLock lock(&d.mu);
  return d.MovePagesLocked(state_->grant, state_->mode, TransferMode::kWrite, layer, page, count,
                           const_cast<uint8_t*>(buf), state_->ended);
}

absl::Status DataPlane::Transfer::ReadPages(uint32_t layer, uint32_t page, uint32_t count,
                                            uint8_t* buf) {
  Impl& d = *state_->dp;
  PlainMutexLock lock(&d.mu);
  return d.MovePagesLocked(state_->grant, state_->mode, TransferMode::kRead, layer, page, count,
                           buf, state_->ended);
}

absl::Status DataPlane::Transfer::Flush() {
  Impl& d = *state_->dp;
  PlainMutexLock lock(&d.mu);
  // The daemon answers a TCP write once its pages hold the bytes.
  if (d.use_tcp) return absl::OkStatus();
  if (!d.ep || d.info.instance_id != state_->grant.instance_id) {
    return absl::UnavailableError("the endpoint was rebuilt since this transfer began");
  }
  return d.ep->Flush(absl::Now() + d.options.op_timeout);
}

absl::Status DataPlane::Transfer::End() {
  if (state_ == nullptr || state_->ended) return absl::OkStatus();
  absl::Status flushed;
  if (state_->mode == TransferMode::kWrite) flushed = Flush();
  Impl& d = *state_->dp;
  PlainMutexLock lock(&d.mu);
  state_->ended = true;
  flushed.Update(d.EndLeaseLocked(state_->grant));
  return flushed;
}

}  // namespace client
}  // namespace kvwarden
