// kvwardend: the kvwarden daemon. Wires the parts together (no god object):
// pools, tenant ledger, worker leases, sequence table, lease reaper, gRPC services.
//
// Exit codes: 0 after SIGINT/SIGTERM, 2 for bad flags or a bad config (one line on
// stderr: file, field, reason), 1 when the server cannot start (e.g. port in use).

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/admin_service.h"
#include "cache_service/attach_server.h"
#include "cache_service/control_service.h"
#include "cache_service/daemon_config.h"
#include "cache_service/lease_reaper.h"
#include "cache_service/listen_interface.h"
#include "cache_service/log.h"
#include "cache_service/parse_failure_interceptor.h"
#include "cache_service/process_fds.h"
#include "cache_service/transfer_service.h"
#include "cache_service/ucx_data_plane.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace kvwarden {
namespace {

struct Flags {
  std::string config;
  std::string listen;
  std::string ready_file;
  std::optional<std::string> attach_socket;
};

// Random per start: lets clients tell a restarted daemon from a reconnect.
std::string NewInstanceId() {
  uint64_t bits[2] = {0, 0};
  std::ifstream("/dev/urandom", std::ios::binary).read(reinterpret_cast<char*>(bits), sizeof(bits));
  return absl::StrFormat("%016x%016x", bits[0], bits[1] ^ static_cast<uint64_t>(getpid()));
}

// Writes "host:port\n" atomically so a waiting script never reads half a line.
bool WriteReadyFile(const std::string& path, const std::string& address) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << address << "\n";
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

std::string BoundAddress(const std::string& listen, int port) {
  return absl::StrCat(listen.substr(0, listen.rfind(':')), ":", port);
}

int Run(const Flags& flags) {
  absl::StatusOr<DaemonSettings> settings = LoadDaemonConfig(flags.config);
  if (!settings.ok()) {
    std::fprintf(stderr, "kvwardend: bad config: %s\n", std::string(settings.status().message()).c_str());
    return 2;
  }
  if (!flags.listen.empty()) settings->listen = flags.listen;
  if (flags.attach_socket) settings->attach_socket = *flags.attach_socket;
  if (settings->listen.rfind(':') == std::string::npos) {
    std::fprintf(stderr, "kvwardend: --listen: '%s' is not HOST:PORT\n", settings->listen.c_str());
    return 2;
  }

  // Signals are taken synchronously by the main thread (sigwait); block them before any
  // thread starts so every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  const uint64_t fd_limit = RaiseFdLimit();
  DataPlaneParts data_plane;
  data_plane.instance_id = NewInstanceId();
  std::unique_ptr<UcxDataPlane> ucx;
  // The data plane listens where the control plane does unless configured otherwise.
  std::string net_devices = settings->ucx_net_devices;
  if (settings->ucx) {
    if (net_devices.empty()) {
      absl::StatusOr<std::string> found = UcxNetDevicesForListenHost(ListenHost(settings->listen));
      if (!found.ok()) {
        std::fprintf(stderr, "kvwardend: UCX data plane: listen %s: %s\n", settings->listen.c_str(),
                     std::string(found.status().message()).c_str());
        return 2;
      }
      net_devices = *found;
    }
    absl::StatusOr<std::unique_ptr<UcxDataPlane>> started =
        UcxDataPlane::Start({settings->ucx_transports, net_devices, settings->stage_all_pools});
    if (!started.ok()) {
      std::fprintf(stderr, "kvwardend: UCX data plane: %s\n",
                   std::string(started.status().message()).c_str());
      return 1;
    }
    ucx = *std::move(started);
    data_plane.ucx = ucx.get();
  }
  TenantLedger ledger(settings->tenants);
  PoolSet pools;
  for (const PoolSpec& spec : settings->pools) {
    PagePoolOptions opts;
    opts.name = spec.name;
    if (spec.cuda_ordinal < 0) {
      opts.device = CpuPoolDevice();
    } else {
      absl::StatusOr<std::shared_ptr<PoolDevice>> device = CudaPoolDevice(spec.cuda_ordinal);
      if (!device.ok()) {
        std::fprintf(stderr, "kvwardend: pool '%s': %s\n", spec.name.c_str(),
                     std::string(device.status().message()).c_str());
        return 1;
      }
      opts.device = *std::move(device);
    }
    if (ucx != nullptr && spec.cuda_ordinal < 0 && !settings->memfd_chunks) {
      // Same-host peers then move pages with plain copies (see UcxDataPlane::NewChunk).
      std::shared_ptr<PoolDevice> device = opts.device;
      const std::string pool_name = spec.name;
      UcxDataPlane* dp = ucx.get();
      opts.chunk_factory = [dp, device, pool_name](size_t bytes, size_t index)
          -> absl::StatusOr<std::unique_ptr<ChunkMemory>> {
        absl::StatusOr<std::unique_ptr<ChunkMemory>> chunk = dp->NewChunk(bytes);
        if (chunk.ok()) return chunk;
        if (index == 0) {
          LogWarning("pool '%s': UCX shared memory unavailable (%s); memfd chunks, RMA emulated",
                     pool_name, chunk.status().message());
        }
        return device->NewChunk(absl::StrCat("kvwarden:", pool_name, ":", index), bytes);
      };
    }
    opts.layout = spec.layout;
    opts.chunk_pages = spec.chunk_pages;
    opts.num_chunks = spec.num_chunks;
    opts.high_water_percent = spec.high_water_percent;
    opts.on_pages_freed = [&ledger](TenantId t, uint64_t pages, uint64_t page_bytes) {
      ledger.Refund(t, pages, page_bytes);
    };
    absl::StatusOr<std::unique_ptr<PagePool>> pool = PagePool::Create(std::move(opts));
    if (!pool.ok()) {
      std::fprintf(stderr, "kvwardend: %s\n", std::string(pool.status().message()).c_str());
      return 1;
    }
    LogInfo("pool '%s' on %s: %s, %d pages of %d bytes in %u chunks", spec.name, spec.device,
            spec.layout.ToString(), (*pool)->capacity_pages(), (*pool)->page_bytes(),
            spec.num_chunks);
    pools.Add(*std::move(pool));
  }
  if (ucx != nullptr) {
    LogInfo("UCX data plane up (UCX_TLS=%s, network interfaces: %s)",
            settings->ucx_transports.empty() ? "default" : settings->ucx_transports,
            net_devices.empty() ? "all" : net_devices);
  }
  LeaseOptions lease_options = settings->leases;
  lease_options.max_leases = [&ledger](TenantId t) { return ledger.spec(t).limits.max_worker_leases; };
  lease_options.limit_refusal = [&ledger](TenantId t, uint32_t limit) {
    ledger.CountLimitRefusal(t);
    return TenantLimitReached(ledger.spec(t), "max_worker_leases", limit, "worker leases");
  };
  WorkerLeases leases(std::move(lease_options), Clock::Real());
  ParkedCalls parked;  // outlives the table, which wakes it
  SequenceTable::Options table_options{&ledger, &leases};
  table_options.on_transfers_changed = [&parked] { parked.Wake(); };
  if (ucx != nullptr) {
    table_options.on_transfer_ended = [dp = ucx.get()](TransferId id, bool completed) {
      return dp->Unstage(id, completed);
    };
  }
  SequenceTable table(table_options);
  std::vector<std::string> tokens;
  for (const TenantAuth& t : settings->tenant_tokens) tokens.push_back(t.token);
  Authenticator auth(settings->admin_token, std::move(tokens));
  LeaseReaper reaper(&leases, &table, settings->reap_interval);

  PolicyDefaults policy_defaults;
  for (const PoolSpec& spec : settings->pools) policy_defaults.pools.push_back(spec.name);
  policy_defaults.tenants = settings->tenant_defaults;
  std::unique_ptr<AttachServer> attach;
  if (!settings->attach_socket.empty()) {
    absl::StatusOr<std::unique_ptr<AttachServer>> started =
        AttachServer::Start(settings->attach_socket, &pools, &auth, &leases,
                            {settings->max_attach_connections, &ledger});
    if (!started.ok()) {
      std::fprintf(stderr, "kvwardend: attach socket: %s\n",
                   std::string(started.status().message()).c_str());
      return 1;
    }
    attach = *std::move(started);
    data_plane.attach = attach.get();
    LogInfo("attach socket on %s", settings->attach_socket);
  }

  ServiceContext ctx{&pools, &ledger, &table, &leases, &auth, &policy_defaults, absl::Now(),
                     &data_plane, &parked};
  ControlServiceImpl control(ctx);
  AdminServiceImpl admin(ctx);
  TransferServiceImpl transfer(ctx);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(settings->listen, grpc::InsecureServerCredentials(), &port);
  // Bounds per connection: streams at once, and time to finish the handshake.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 1024);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 5000);
  builder.RegisterService(&control);
  builder.RegisterService(&admin);
  builder.RegisterService(&transfer);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(NewParseFailureInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "kvwardend: cannot listen on %s\n", settings->listen.c_str());
    return 1;
  }
  const std::string address = BoundAddress(settings->listen, port);
  LogInfo("kvwardend %s serving on %s (%d tenants, %d pools, %d fds allowed)", KVWARDEN_VERSION, address,
          settings->tenants.size(), settings->pools.size(), fd_limit);
  if (!flags.ready_file.empty() && !WriteReadyFile(flags.ready_file, address)) {
    std::fprintf(stderr, "kvwardend: cannot write --ready-file %s\n", flags.ready_file.c_str());
    server->Shutdown();
    return 1;
  }

  int sig = 0;
  sigwait(&stop_signals, &sig);
  LogInfo("signal %d: shutting down", sig);
  parked.Shutdown();  // calls waiting for a transfer lease end now, not at their deadline
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  return 0;
}

}  // namespace
}  // namespace kvwarden

int main(int argc, char** argv) {
  kvwarden::Flags flags;
  CLI::App app{"kvwardend: KV-cache memory manager daemon (one per accelerator)"};
  app.set_version_flag("--version", KVWARDEN_VERSION);
  app.add_option("--config", flags.config,
                 "Daemon config, protobuf text format (schema: proto/kvwarden/v1/config.proto)")
      ->required();
  app.add_option("--listen", flags.listen,
                 "HOST:PORT to serve gRPC on; overrides the config's `listen`. Port 0 picks a "
                 "free port");
  app.add_option("--ready-file", flags.ready_file,
                 "Write the bound HOST:PORT to this file once serving (for scripts and tests)");
  app.add_option("--attach-socket", flags.attach_socket,
                 "Unix socket for same-host attach (chunk fds); overrides the config's "
                 "data_plane.attach_socket. Empty turns attach off");
  app.footer(
      "Exit codes: 0 stopped by SIGINT/SIGTERM; 1 could not start (port, memory); "
      "2 bad flags or bad config.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  return kvwarden::Run(flags);
}
