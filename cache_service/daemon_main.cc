// kvwardend: the kvwarden daemon. Flags and config, then the parts (Daemon, daemon.h)
// behind a gRPC server on the configured port, until SIGINT/SIGTERM.
//
// Exit codes: 0 after SIGINT/SIGTERM, 2 for bad flags or a bad config (one line on
// stderr: file, field, reason), 1 when the server cannot start (e.g. port in use).

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "cache_service/daemon.h"
#include "cache_service/daemon_config.h"
#include "cache_service/systemd_notify.h"
#include "cache_service/util/log.h"
#include "cache_service/util/process_fds.h"
#include "common/cluster/etcd_client.h"
#include "common/net/tcp_listen.h"
#include "google/protobuf/stubs/logging.h"
#include "grpc/support/log.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace kvwarden {
namespace {

constexpr char kLivenessService[] = "kvwarden.liveness";

struct Flags {
  std::string config;
  std::string listen;
  std::string ready_file;
  std::optional<std::string> attach_socket;
  std::optional<std::string> metrics;
  std::string log_format;
  std::string log_level;
  bool check_config = false;
  std::optional<std::string> cluster;
  std::optional<std::string> node;
  std::optional<std::string> peer_token_file;
  std::optional<std::string> advertise;
};

// Writes "host:port\n" atomically so a waiting script never reads half a line.
void GrpcLogToOurs(gpr_log_func_args* args) {
  const LogLevel level = args->severity == GPR_LOG_SEVERITY_ERROR  ? LogLevel::kWarning
                         : args->severity == GPR_LOG_SEVERITY_INFO ? LogLevel::kInfo
                                                                   : LogLevel::kDebug;
  const char* slash = args->file != nullptr ? std::strrchr(args->file, '/') : nullptr;
  LogEvent(level, "grpc_log")
      .Field("source", absl::StrCat(slash != nullptr ? slash + 1 : (args->file ? args->file : "?"),
                                    ":", args->line))
      .Field("message", args->message != nullptr ? args->message : "");
}

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
    std::fprintf(stderr, "kvwardend: bad config: %s\n",
                 std::string(settings.status().message()).c_str());
    return 2;
  }
  if (!flags.listen.empty()) settings->listen = flags.listen;
  if (flags.attach_socket) settings->attach_socket = *flags.attach_socket;
  if (flags.metrics) settings->metrics_listen = *flags.metrics;
  if (flags.cluster) {
    absl::StatusOr<std::vector<std::string>> endpoints = ParseEtcdEndpoints(*flags.cluster);
    if (!endpoints.ok()) {
      std::fprintf(stderr, "kvwardend: --cluster: %s\n",
                   std::string(endpoints.status().message()).c_str());
      return 2;
    }
    settings->cluster.endpoints = *std::move(endpoints);
  }
  if (flags.node) settings->cluster.node = *flags.node;
  if (flags.advertise) settings->cluster.advertise = *flags.advertise;
  if (flags.peer_token_file) {
    absl::StatusOr<std::string> token = ReadTokenFile(*flags.peer_token_file);
    if (!token.ok()) {
      std::fprintf(stderr, "kvwardend: --peer-token-file: %s\n",
                   std::string(token.status().message()).c_str());
      return 2;
    }
    settings->cluster.peer_token = *std::move(token);
  }
  if (absl::Status s = ValidateClusterSettings(settings->cluster); !s.ok()) {
    std::fprintf(stderr, "kvwardend: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (absl::Status s = CheckTenantSources(*settings); !s.ok()) {
    std::fprintf(stderr, "kvwardend: bad config: %s: %s\n", flags.config.c_str(),
                 std::string(s.message()).c_str());
    return 2;
  }
  if (!flags.log_format.empty() && !ParseLogFormat(flags.log_format, &settings->log_format)) {
    std::fprintf(stderr, "kvwardend: --log-format: '%s' is not text or json\n",
                 flags.log_format.c_str());
    return 2;
  }
  if (!flags.log_level.empty() && !ParseLogLevel(flags.log_level, &settings->log_level)) {
    std::fprintf(stderr, "kvwardend: --log-level: '%s' is not debug, info, warning or error\n",
                 flags.log_level.c_str());
    return 2;
  }
  ConfigureLog(settings->log_format, settings->log_level);
  if (flags.check_config) {
    std::printf("kvwardend: %s is valid: %zu pools, %zu tenants, listen %s\n", flags.config.c_str(),
                settings->pools.size(), settings->tenants.size(), settings->listen.c_str());
    return 0;
  }
  // Before any part starts: a bad address is named as the flag's, not as the first
  // listener (UCX, the TCP data path) that happens to trip on it.
  if (!settings->metrics_listen.empty()) {
    if (absl::Status s = net::CheckListenAddress(settings->metrics_listen); !s.ok()) {
      std::fprintf(stderr, "kvwardend: --metrics: %s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  if (absl::Status s = net::CheckListenAddress(settings->listen); !s.ok()) {
    std::fprintf(stderr, "kvwardend: --listen: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  // gRPC's own log lines (a TLS handshake a client broke off, say) become our events, so
  // the log stays one record per line in the configured format.
  gpr_set_log_function(GrpcLogToOurs);

  // Debian's Abseil is built without NDEBUG, so every absl::Mutex runs the deadlock
  // detector (its lock graph) by default: ~45 ns per lock+unlock instead of ~13. The tests
  // keep it; the daemon turns it off unless KVW_MUTEX_DEADLOCK_DETECTION=1.
  if (const char* d = std::getenv("KVW_MUTEX_DEADLOCK_DETECTION");
      d == nullptr || std::string(d) != "1") {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  }

  // Signals are taken synchronously by the main thread (sigwait); block them before any
  // thread starts so every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // Protobuf logs a line per string field with invalid UTF-8: a tenant could fill the
  // log with them. Parse failures are answered (INVALID_ARGUMENT) instead.
  google::protobuf::SetLogHandler(nullptr);
  const uint64_t fd_limit = RaiseFdLimit();
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(*settings);
  if (!daemon.ok()) {
    std::fprintf(stderr, "kvwardend: %s\n", std::string(daemon.status().message()).c_str());
    return daemon.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  absl::StatusOr<std::unique_ptr<GrpcAcceptor>> acceptor =
      (*daemon)->ListenGrpc(settings->listen, fd_limit);
  if (!acceptor.ok()) {
    std::fprintf(stderr, "kvwardend: %s\n", std::string(acceptor.status().message()).c_str());
    return acceptor.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  grpc::ServerBuilder builder;  // no listening port: the acceptor hands connections over
  (*daemon)->AddTo(builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server != nullptr) {
    // Before the first connection is handed over: admin calls may use it at once.
    // Liveness ("kvwarden.liveness") means the process serves; readiness (the overall
    // status, "") also goes NOT_SERVING once every pool drains. A liveness probe on the
    // overall status would restart a draining daemon and lose what the drain keeps.
    if (grpc::HealthCheckServiceInterface* h = server->GetHealthCheckService()) {
      h->SetServingStatus(kLivenessService, true);
    }
    (*daemon)->SetServingHook([s = server.get()](bool serving) {
      if (grpc::HealthCheckServiceInterface* h = s->GetHealthCheckService()) {
        h->SetServingStatus("", serving);
      }
    });
  }
  if (server == nullptr || !(*acceptor)->Serve(server.get(), (*daemon)->tls_acceptor()).ok()) {
    std::fprintf(stderr, "kvwardend: cannot start the gRPC server\n");
    return 1;
  }
  const int port = (*acceptor)->port();
  const std::string address = BoundAddress(settings->listen, port);
  {
    // The config in one line, without secrets (tokens are never logged).
    std::string pools;
    for (const PoolSpec& p : settings->pools) {
      absl::StrAppend(&pools, pools.empty() ? "" : ",", p.name, ":", p.device, ":",
                      uint64_t{p.chunk_pages} * p.num_chunks, "pages");
    }
    LogEvent(LogLevel::kInfo, "start")
        .Field("version", KVWARDEN_VERSION)
        .Field("config", flags.config)
        .Field("listen", address)
        .Field("pools", pools)
        .Field("tenants", settings->tenants.size())
        .Field("ucx", settings->ucx)
        .Field("tls", !settings->tls.enabled()              ? "off"
                      : settings->tls.client_ca_pem.empty() ? "on"
                                                            : "mutual")
        .Field("attach_socket", settings->attach_socket)
        .Field("metrics", (*daemon)->metrics_address())
        .Field("fd_limit", fd_limit)
        .Field("max_grpc_connections", settings->max_grpc_connections)
        .Field("log_level", LogLevelName(settings->log_level))
        .Field("cluster_node", settings->cluster.enabled() ? settings->cluster.node : "off");
  }
  if (!flags.ready_file.empty() && !WriteReadyFile(flags.ready_file, address)) {
    std::fprintf(stderr, "kvwardend: cannot write --ready-file %s\n", flags.ready_file.c_str());
    acceptor->reset();
    server->Shutdown();
    return 1;
  }
  if (absl::Status s = (*daemon)->JoinCluster(address); !s.ok()) {
    std::fprintf(stderr, "kvwardend: cluster: %s\n", std::string(s.message()).c_str());
    acceptor->reset();
    server->Shutdown();
    return 1;
  }
  // The watchdog probe takes the sequence table's lock: a wedged table stops the pings.
  SystemdNotifier systemd([d = daemon->get()] { (void)d->table().TenantSequences(0); });
  systemd.Ready(absl::StrCat("serving on ", address));

  int sig = 0;
  sigwait(&stop_signals, &sig);
  LogEvent(LogLevel::kInfo, "stop").Field("signal", sig);
  (*daemon)->LeaveCluster();  // first: clients stop choosing this node
  systemd.Stopping();
  acceptor->reset();  // no new connections
  (*daemon)
      ->StopParkedCalls();      // calls waiting for a transfer lease end now, not at their deadline
  (*daemon)->StopMigrations();  // likewise calls waiting on another daemon
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
  app.add_option("--metrics", flags.metrics,
                 "HOST:PORT serving Prometheus metrics at /metrics; overrides the config's "
                 "metrics.listen. Port 0 picks a free port; empty turns metrics off");
  app.add_flag("--check-config", flags.check_config,
               "Load and validate the config (token files included), print a summary and exit: 0 "
               "valid, 2 not");
  app.add_option("--log-format", flags.log_format,
                 "text (key=value, default) or json (one object per line); overrides log.format");
  app.add_option("--log-level", flags.log_level,
                 "debug, info (default), warning or error; overrides log.level");
  app.add_option("--cluster", flags.cluster,
                 "etcd://HOST:PORT[,HOST:PORT...]: join the cluster these etcd members keep; "
                 "overrides cluster.endpoints (README, \"Cluster mode\")");
  app.add_option("--node", flags.node, "This daemon's name in the cluster; overrides cluster.node");
  app.add_option("--peer-token-file", flags.peer_token_file,
                 "File holding the secret the cluster's daemons share to move sequences between "
                 "them; overrides cluster.peer_token(_file)");
  app.add_option(
      "--advertise", flags.advertise,
      "HOST:PORT other nodes and clients call this daemon at; overrides cluster.advertise "
      "(default: the bound --listen address)");
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
