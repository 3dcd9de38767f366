#include "cache_service/daemon.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/core/memory/pool_device.h"
#include "cache_service/dataplane/listen_interface.h"
#include "cache_service/metrics/rpc_metrics_interceptor.h"
#include "cache_service/retention/registry.h"
#include "cache_service/rpc/connection_auth.h"
#include "cache_service/rpc/parse_failure_interceptor.h"
#include "cache_service/rpc/proto_convert.h"
#include "cache_service/util/log.h"
#include "common/net/tcp_data_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace kvwarden {
namespace {

// Random per start: lets clients tell a restarted daemon from a reconnect.
std::string NewInstanceId() {
  uint64_t bits[2] = {0, 0};
  std::ifstream("/dev/urandom", std::ios::binary).read(reinterpret_cast<char*>(bits), sizeof(bits));
  return absl::StrFormat("%016x%016x", bits[0], bits[1] ^ static_cast<uint64_t>(getpid()));
}

absl::Status Prefixed(const absl::Status& s, const std::string& prefix) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

// How this daemon calls the others of its cluster: over TLS when it serves TLS, trusting
// the CA that signs its clients' certificates and presenting its own certificate (one
// CA for the cluster's daemons), else in plaintext as it is called.
std::shared_ptr<grpc::ChannelCredentials> PeerCredentials(const TlsSettings& tls) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = tls.client_ca_pem;
  o.pem_private_key = tls.key_pem;
  o.pem_cert_chain = tls.cert_pem;
  return grpc::SslCredentials(o);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const DaemonSettings& settings) {
  if (absl::Status s = CheckTenantSources(settings); !s.ok()) return s;
  std::unique_ptr<Daemon> d(new Daemon());
  d->cluster_ = settings.cluster;
  d->data_plane_.instance_id = NewInstanceId();
  // The data plane listens where the control plane does unless configured otherwise.
  std::string net_devices = settings.ucx_net_devices;
  if (settings.ucx) {
    if (net_devices.empty()) {
      absl::StatusOr<std::string> found = UcxNetDevicesForListenHost(ListenHost(settings.listen));
      if (!found.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("UCX data plane: listen ", settings.listen,
                                                       ": ", found.status().message()));
      }
      net_devices = *found;
    }
    absl::StatusOr<std::unique_ptr<UcxDataPlane>> started =
        UcxDataPlane::Start({settings.ucx_transports, net_devices, settings.stage_all_pools});
    if (!started.ok()) return Prefixed(started.status(), "UCX data plane: ");
    d->ucx_ = *std::move(started);
    d->data_plane_.ucx = d->ucx_.get();
  }
  d->ledger_ = std::make_unique<TenantLedger>(settings.tenants);
  TenantLedger* ledger = d->ledger_.get();
  for (const PoolSpec& spec : settings.pools) {
    PagePoolOptions opts;
    opts.name = spec.name;
    if (spec.cuda_ordinal < 0) {
      opts.device = CpuPoolDevice();
    } else {
      absl::StatusOr<std::shared_ptr<PoolDevice>> device = CudaPoolDevice(spec.cuda_ordinal);
      if (!device.ok()) return Prefixed(device.status(), absl::StrCat("pool '", spec.name, "': "));
      opts.device = *std::move(device);
    }
    if (d->ucx_ != nullptr && spec.cuda_ordinal < 0 && !settings.memfd_chunks) {
      // Same-host peers then move pages with plain copies (see UcxDataPlane::NewChunk).
      std::shared_ptr<PoolDevice> device = opts.device;
      const std::string pool_name = spec.name;
      UcxDataPlane* dp = d->ucx_.get();
      auto warned = std::make_shared<std::atomic<bool>>(false);  // once per pool
      opts.chunk_factory = [dp, device, pool_name, warned](
                               size_t bytes,
                               size_t index) -> absl::StatusOr<std::unique_ptr<ChunkMemory>> {
        absl::StatusOr<std::unique_ptr<ChunkMemory>> chunk = dp->NewChunk(bytes);
        if (chunk.ok()) return chunk;
        if (!warned->exchange(true)) {
          LogEvent(LogLevel::kWarning, "ucx_shm_unavailable")
              .Field("pool", pool_name)
              .Field("error", chunk.status().message())
              .Field("fallback", "memfd chunks, RMA emulated");
        }
        return device->NewChunk(absl::StrCat("kvwarden:", pool_name, ":", index), bytes);
      };
    }
    opts.layout = spec.layout;
    opts.chunk_pages = spec.chunk_pages;
    opts.num_chunks = spec.num_chunks;
    opts.high_water_percent = spec.high_water_percent;
    opts.preallocate = spec.preallocate;
    opts.on_pages_freed = [ledger](TenantId t, uint64_t pages, uint64_t page_bytes) {
      ledger->Refund(t, pages, page_bytes);
    };
    absl::StatusOr<std::unique_ptr<PagePool>> pool = PagePool::Create(std::move(opts));
    if (!pool.ok()) return pool.status();
    LogEvent(LogLevel::kInfo, "pool_ready")
        .Field("pool", spec.name)
        .Field("device", spec.device)
        .Field("layout", spec.layout.ToString())
        .Field("capacity_pages", (*pool)->capacity_pages())
        .Field("page_bytes", (*pool)->page_bytes())
        .Field("chunks", spec.num_chunks)
        .Field("preallocate", spec.preallocate);
    d->pools_.Add(*std::move(pool));
  }
  if (d->ucx_ != nullptr) {
    LogEvent(LogLevel::kInfo, "ucx_ready")
        .Field("transports", settings.ucx_transports.empty() ? "default" : settings.ucx_transports)
        .Field("interfaces", net_devices.empty() ? "all" : net_devices);
  }
  LeaseOptions lease_options = settings.leases;
  lease_options.max_leases = [ledger](TenantId t) { return ledger->limits(t).max_worker_leases; };
  lease_options.limit_refusal = [ledger](TenantId t, uint32_t limit) {
    ledger->CountLimitRefusal(t);
    return TenantLimitReached(ledger->spec(t), "max_worker_leases", limit, "worker leases");
  };
  d->leases_ = std::make_unique<WorkerLeases>(std::move(lease_options), Clock::Real());
  SequenceTable::Options table_options;
  table_options.ledger = ledger;
  table_options.leases = d->leases_.get();
  if (!settings.metrics_listen.empty()) {
    std::vector<std::string> pool_names;
    for (const PoolSpec& p : settings.pools) pool_names.push_back(p.name);
    d->metrics_ = std::make_unique<DaemonMetrics>(pool_names);
    table_options.events = d->metrics_.get();
  }
  ParkedCalls* parked = &d->parked_;
  // Every tenant's fair share of the parked-call room, so one cannot fill it for all.
  // Fleet-wide tenants come and go: plan for at least 16 then.
  const size_t tenants_planned =
      std::max<size_t>(settings.cluster.enabled() && settings.cluster.fleet_tenants ? 16 : 1,
                       settings.tenants.size());
  parked->SetTenantShare(std::max<size_t>(16, 4096 / tenants_planned));
  table_options.on_transfers_changed = [parked] { parked->Wake(); };
  if (d->ucx_ != nullptr) {
    table_options.on_transfer_ended = [dp = d->ucx_.get()](TransferId id, bool completed) {
      return dp->Unstage(id, completed);
    };
  }
  ClusterHooks* hooks = &d->hooks_;
  table_options.on_sequence_ended = [hooks](SequenceId id, SequenceEnd why) {
    hooks->SequenceEnded(id, why);
  };
  d->table_ = std::make_unique<SequenceTable>(std::move(table_options));
  if (settings.tcp_data) {
    TcpDataServer::Options tcp;
    tcp.listen = settings.tcp_data_listen;
    if (tcp.listen.empty()) {
      const std::string host = ListenHost(settings.listen);
      tcp.listen =
          absl::StrCat(host.find(':') != std::string::npos ? "[" + host + "]" : host, ":0");
    }
    tcp.max_connections = settings.max_tcp_data_connections;
    tcp.max_per_tenant = settings.max_tcp_data_connections_per_tenant;
    absl::StatusOr<std::unique_ptr<TcpDataServer>> started =
        TcpDataServer::Start(tcp, d->table_.get());
    if (!started.ok()) return Prefixed(started.status(), "TCP data path: ");
    d->tcp_data_ = *std::move(started);
    d->data_plane_.tcp_data_port = d->tcp_data_->port();
    LogEvent(LogLevel::kInfo, "tcp_data_listening")
        .Field("listen", tcp.listen)
        .Field("port", d->tcp_data_->port());
  }
  std::vector<std::string> tokens;
  for (const TenantAuth& t : settings.tenant_tokens) tokens.push_back(t.token);
  d->auth_ = std::make_unique<Authenticator>(
      settings.admin_token, std::move(tokens),
      settings.cluster.enabled() ? settings.cluster.peer_token : "");
  d->grpc_limits_ = {settings.max_grpc_connections, settings.max_grpc_connections_per_peer,
                     settings.grpc_preface_timeout, settings.grpc_auth_timeout,
                     &d->connection_marks_};
  // Room kept for what must never be refused for want of an fd: one per chunk (shm or
  // memfd backing), the attach connections, and UCX, gRPC and log files.
  d->fd_reserve_ = 1024 + uint64_t{settings.max_attach_connections};
  if (settings.tcp_data) {
    d->fd_reserve_ +=
        uint64_t{settings.max_tcp_data_connections} + TcpDataServer::Options().max_unauthenticated;
  }
  for (const PoolSpec& p : settings.pools) d->fd_reserve_ += p.num_chunks;
  d->reaper_ =
      std::make_unique<LeaseReaper>(d->leases_.get(), d->table_.get(), settings.reap_interval);

  for (const PoolSpec& spec : settings.pools) d->policy_defaults_.pools.push_back(spec.name);
  d->policy_defaults_.tenants = settings.tenant_defaults;
  if (!settings.attach_socket.empty()) {
    absl::StatusOr<std::unique_ptr<AttachServer>> started =
        AttachServer::Start(settings.attach_socket, &d->pools_, d->auth_.get(), d->leases_.get(),
                            {settings.max_attach_connections, ledger});
    if (!started.ok()) return Prefixed(started.status(), "attach socket: ");
    d->attach_ = *std::move(started);
    d->data_plane_.attach = d->attach_.get();
    LogEvent(LogLevel::kInfo, "attach_listening").Field("path", settings.attach_socket);
  }
  if (d->cluster_.enabled()) {
    // etcd is reached lazily: a daemon starts whether or not etcd answers yet.
    EtcdClient::Options etcd_options;
    etcd_options.endpoints = d->cluster_.endpoints;
    etcd_options.tls = d->cluster_.etcd_tls;
    absl::StatusOr<std::unique_ptr<EtcdClient>> etcd = EtcdClient::Create(std::move(etcd_options));
    if (!etcd.ok()) return Prefixed(etcd.status(), "cluster: ");
    d->etcd_ = *std::move(etcd);
    d->view_ =
        std::make_unique<ClusterView>(ClusterView::Options{d->etcd_.get(), d->cluster_.key_prefix});
    Handles::Options h;
    h.view = d->view_.get();
    h.etcd = d->etcd_.get();
    h.ledger = ledger;
    h.key_prefix = d->cluster_.key_prefix;
    h.node = d->cluster_.node;
    h.node_lease = [hooks] { return hooks->node_lease.load(); };
    h.alive = [table = d->table_.get()](SequenceId id) {
      return table->Describe(id, Caller::Admin(), false, false).ok();
    };
    d->handles_ = std::make_unique<Handles>(std::move(h));
    if (d->cluster_.fleet_tenants) {
      TenantDirectory::Options t;
      t.etcd = d->etcd_.get();
      t.ledger = ledger;
      t.auth = d->auth_.get();
      t.key_prefix = d->cluster_.key_prefix;
      t.limits = [base = settings.tenant_limits](const v1::TenantLimitsConfig& in) {
        return LimitsFrom(in, base);
      };
      d->tenants_ = std::make_unique<TenantDirectory>(std::move(t));
      // A moment for the first listing, so a fleet-wide tenant's first call after a
      // start is not refused; without etcd the daemon starts anyway and lists later.
      if (!d->tenants_->WaitSynced(absl::Seconds(2))) {
        LogEvent(LogLevel::kWarning, "fleet_tenants_not_listed_yet")
            .Field("etcd", d->etcd_->current_endpoint());
      }
    }
    {
      absl::MutexLock lock(&hooks->mu);
      hooks->handles = d->handles_.get();
    }
    Migrations::Options m;
    m.handles = d->handles_.get();
    m.view = d->view_.get();
    m.table = d->table_.get();
    m.ledger = ledger;
    m.leases = d->leases_.get();
    m.pools = &d->pools_;
    m.etcd = d->etcd_.get();
    m.key_prefix = d->cluster_.key_prefix;
    m.node = d->cluster_.node;
    m.peer_token = d->cluster_.peer_token;
    m.auth = d->auth_.get();
    m.data_port = d->data_plane_.tcp_data_port;
    m.peer_credentials = PeerCredentials(settings.tls);
    if (d->metrics_ != nullptr) {
      m.on_result = [metrics = d->metrics_.get()](bool out, absl::StatusCode code, uint64_t bytes) {
        metrics->MigrationEnded(out, code, bytes);
      };
    }
    d->migrations_ = std::make_unique<Migrations>(std::move(m));
  }
  ServiceContext ctx{&d->pools_,           ledger,
                     d->table_.get(),      d->leases_.get(),
                     d->auth_.get(),       &d->policy_defaults_,
                     absl::Now(),          &d->data_plane_,
                     &d->parked_,          &d->grpc_connections_,
                     &d->metrics_address_, &d->config_text_,
                     &d->config_path_,     &d->set_serving_};
  ctx.migrations = d->migrations_.get();
  ctx.handles = d->handles_.get();
  ctx.cluster_view = d->view_.get();
  ctx.node = d->cluster_.node;
  d->config_text_ = settings.redacted_config;
  d->tls_ = settings.tls;
  d->grpc_idle_timeout_ = settings.grpc_idle_timeout;
  d->config_path_ = settings.config_path;
  d->control_.emplace(ctx);
  d->admin_.emplace(ctx);
  d->transfer_.emplace(ctx);
  if (d->migrations_ != nullptr) d->peer_.emplace(d->migrations_.get());
  if (d->metrics_ != nullptr) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> server =
        MetricsServer::Start(settings.metrics_listen, d->metrics_.get(), ctx);
    if (!server.ok()) return server.status();
    d->metrics_server_ = *std::move(server);
    d->metrics_address_ = d->metrics_server_->address();
    LogEvent(LogLevel::kInfo, "metrics_listening")
        .Field("url", absl::StrCat("http://", d->metrics_address_, "/metrics"));
  }
  return d;
}

Daemon::~Daemon() {
  parked_.Shutdown();
  // Sequence ends reported from here on (the reaper, the table's end) leave handles be:
  // the node's lease takes their entries with it.
  absl::MutexLock lock(&hooks_.mu);
  hooks_.handles = nullptr;
}

absl::StatusOr<std::unique_ptr<GrpcAcceptor>> Daemon::ListenGrpc(const std::string& address,
                                                                 uint64_t fd_limit) {
  GrpcConnectionLimits limits = grpc_limits_;
  const uint64_t room = fd_limit > fd_reserve_ + 64 ? fd_limit - fd_reserve_ : 64;
  if (limits.max_connections > room) {
    LogEvent(LogLevel::kWarning, "max_connections_lowered")
        .Field("configured", limits.max_connections)
        .Field("now", room)
        .Field("fd_limit", fd_limit)
        .Field("fds_kept", fd_reserve_);
    limits.max_connections = static_cast<uint32_t>(room);
  }
  limits.max_connections_per_peer =
      std::min(limits.max_connections_per_peer, limits.max_connections);
  return GrpcAcceptor::Listen(address, limits, &grpc_connections_);
}

void Daemon::AddTo(grpc::ServerBuilder& builder) {
  if (tls_.enabled()) {
    grpc::SslServerCredentialsOptions opts(
        tls_.client_ca_pem.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                   : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    opts.pem_root_certs = tls_.client_ca_pem;
    opts.pem_key_cert_pairs.push_back({tls_.key_pem, tls_.cert_pem});
    tls_acceptor_ = builder.experimental().AddExternalConnectionAcceptor(
        grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD,
        grpc::SslServerCredentials(opts));
  }
  builder.RegisterService(&*control_);
  builder.RegisterService(&*admin_);
  builder.RegisterService(&*transfer_);
  if (peer_) builder.RegisterService(&*peer_);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(NewParseFailureInterceptorFactory());
  interceptors.push_back(NewConnectionAuthInterceptorFactory(auth_.get(), &connection_marks_));
  if (metrics_ != nullptr) interceptors.push_back(NewRpcMetricsInterceptorFactory(metrics_.get()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // Bounds per connection: streams at once, and time to finish the handshake.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 1024);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 5000);
  // Idle connections (no call in flight) go, so they cannot hold the per-peer cap.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(grpc_idle_timeout_)));
}

absl::Status Daemon::JoinCluster(const std::string& grpc_address) {
  if (!cluster_.enabled()) return absl::OkStatus();
  NodeRegistration::Options o;
  o.etcd = etcd_.get();
  o.key_prefix = cluster_.key_prefix;
  o.node = cluster_.node;
  o.ttl = cluster_.lease_ttl;
  const std::string address = AdvertisedAddress(cluster_, grpc_address);
  migrations_->SetAdvertisedHost(net::TargetHost(address));
  handles_->SetAddress(address);
  o.on_lease = [this](int64_t lease) {
    hooks_.node_lease = lease;
    if (lease != 0) handles_->Republish(lease);
  };
  const int64_t started = absl::ToUnixMillis(absl::Now());
  const bool migrates = !cluster_.peer_token.empty() && data_plane_.tcp_data_port != 0;
  o.describe = [this, address, started, migrates] {
    v1::NodeInfo info;
    info.set_grpc_address(address);
    info.set_migration_transport(migrates ? "tcp" : "none");
    info.set_data_port(data_plane_.tcp_data_port);
    info.set_version(KVWARDEN_VERSION);
    info.set_started_unix_ms(started);
    for (const PagePool* pool : pools_.all()) {
      v1::NodePool* p = info.add_pools();
      p->set_name(pool->name());
      p->set_device(pool->device());
      ToProto(pool->layout(), p->mutable_layout());
      const PagePoolStats s = pool->Stats();
      p->set_capacity_pages(s.capacity_pages);
      p->set_free_pages(s.capacity_pages - s.used_pages);
    }
    return info;
  };
  registration_ = std::make_unique<NodeRegistration>(std::move(o));
  return absl::OkStatus();
}

}  // namespace kvwarden
