#include "cache_service/dataplane/attach_server.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache_service/util/log.h"
#include "cache_service/util/random_id.h"
#include "common/fd/seqpacket.h"
#include "kvwarden/v1/transfer.pb.h"

namespace kvwarden {
namespace {

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

void Answer(int fd, const absl::Status& status) {
  v1::AttachResponse resp;
  resp.set_code(static_cast<int>(status.code()));
  resp.set_message(std::string(status.message()));
  (void)SendRecord(fd, resp.SerializeAsString());
}

}  // namespace

AttachServer::AttachServer(std::string path, const PoolSet* pools, const Authenticator* auth,
                           const WorkerLeases* leases, Options options)
    : path_(std::move(path)), pools_(pools), auth_(auth), leases_(leases), options_(options) {}

absl::StatusOr<std::unique_ptr<AttachServer>> AttachServer::Start(const std::string& path,
                                                                  const PoolSet* pools,
                                                                  const Authenticator* auth,
                                                                  const WorkerLeases* leases,
                                                                  Options options) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("attach socket path '", path, "': must be 1..",
                                                   sizeof(addr.sun_path) - 1, " bytes"));
  }
  std::unique_ptr<AttachServer> server(new AttachServer(path, pools, auth, leases, options));
  server->listen_fd_.reset(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!server->listen_fd_.valid()) return Errno("socket(AF_UNIX)");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path.c_str());
  if (bind(server->listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Errno(absl::StrCat("bind ", path));
  }
  chmod(path.c_str(), 0660);
  if (listen(server->listen_fd_.get(), 64) != 0) return Errno("listen");
  server->wake_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!server->wake_fd_.valid()) return Errno("eventfd");
  AttachServer* raw = server.get();
  server->thread_ = std::thread([raw] {
    pthread_setname_np(pthread_self(), "kvw-attach");
    raw->Serve();
  });
  return server;
}

AttachServer::~AttachServer() {
  stop_.store(true);
  const uint64_t one = 1;
  (void)!write(wake_fd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  unlink(path_.c_str());
}

std::vector<AttachmentSnapshot> AttachServer::List() const {
  std::vector<AttachmentSnapshot> out;
  absl::MutexLock lock(&mu_);
  for (const auto& c : conns_) {
    if (c->info.id != 0) out.push_back(c->info);
  }
  return out;
}

void AttachServer::Serve() {
  absl::Time last_sweep = absl::Now();
  while (!stop_.load()) {
    std::vector<pollfd> fds{{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    std::vector<Connection*> polled;
    {
      absl::MutexLock lock(&mu_);
      for (auto& c : conns_) {
        fds.push_back({c->fd.get(), POLLIN, 0});
        polled.push_back(c.get());
      }
    }
    // A timeout so lapsed leases are noticed even on an idle socket.
    if (poll(fds.data(), fds.size(), 1000) < 0 && errno != EINTR) {
      LogEvent(LogLevel::kError, "attach_poll_failed").Field("error", std::strerror(errno));
      return;
    }
    std::vector<Connection*> closing, lease_ended;
    for (size_t i = 0; i < polled.size(); ++i) {
      if (fds[i + 2].revents == 0) continue;
      if ((fds[i + 2].revents & POLLIN) == 0 || !Handle(*polled[i])) closing.push_back(polled[i]);
    }
    if (absl::Now() - last_sweep > absl::Seconds(1)) {
      last_sweep = absl::Now();
      absl::MutexLock lock(&mu_);
      for (auto& c : conns_) {
        const bool lapsed =
            c->info.id != 0 && !leases_->CheckActive(c->info.lease, c->info.tenant).ok();
        const bool silent = c->info.id == 0 && last_sweep - c->accepted > kAuthDeadline;
        if (lapsed || silent) closing.push_back(c.get());
        if (lapsed) lease_ended.push_back(c.get());
      }
    }
    if (!closing.empty()) {
      absl::MutexLock lock(&mu_);
      std::erase_if(conns_, [&](const std::unique_ptr<Connection>& c) {
        if (std::find(closing.begin(), closing.end(), c.get()) == closing.end()) return false;
        if (c->info.id != 0) {
          LogEvent(LogLevel::kInfo, "attach_closed")
              .Field("attachment", c->info.id)
              .Field("tenant", TenantName(c->info.tenant))
              .Field("lease", c->info.lease)
              .Field("pid", c->info.pid)
              .Field("why",
                     std::find(lease_ended.begin(), lease_ended.end(), c.get()) != lease_ended.end()
                         ? "lease ended"
                         : "closed or refused");
        }
        return true;
      });
    }
    if (fds[0].revents & POLLIN) {
      // Non-blocking: a peer that does not read its answers fails the send (and is
      // closed) instead of blocking this thread for every tenant.
      UniqueFd fd(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (fd.valid()) {
        // Not attached yet: capped apart from attached connections, oldest out first.
        absl::MutexLock lock(&mu_);
        size_t unattached = 0;
        auto oldest = conns_.end();
        for (auto it = conns_.begin(); it != conns_.end(); ++it) {
          if ((*it)->info.id != 0) continue;
          ++unattached;
          if (oldest == conns_.end() || (*it)->accepted < (*oldest)->accepted) oldest = it;
        }
        if (unattached >= kMaxUnattached && oldest != conns_.end()) conns_.erase(oldest);
      }
      if (fd.valid()) {
        auto conn = std::make_unique<Connection>();
        conn->accepted = absl::Now();
        ucred cred{};
        socklen_t len = sizeof(cred);
        if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
          conn->info.pid = cred.pid;
        conn->fd = std::move(fd);
        absl::MutexLock lock(&mu_);
        conns_.push_back(std::move(conn));
      }
    }
  }
  absl::MutexLock lock(&mu_);
  conns_.clear();
}

bool AttachServer::Handle(Connection& conn) {
  std::vector<UniqueFd> ignored;
  absl::StatusOr<std::string> record = RecvRecord(conn.fd.get(), &ignored, absl::ZeroDuration());
  if (!record.ok()) return false;  // closed or broken
  v1::AttachRequest req;
  if (!req.ParseFromString(*record)) {
    Answer(conn.fd.get(), absl::InvalidArgumentError("attach request does not parse"));
    return false;
  }
  absl::StatusOr<Caller> caller = auth_->Authenticate(absl::StrCat("Bearer ", req.token()));
  if (!caller.ok()) {
    Answer(conn.fd.get(), caller.status());
    return false;
  }
  if (caller->admin) {
    Answer(conn.fd.get(),
           absl::PermissionDeniedError("the admin token cannot attach; use the tenant's token"));
    return false;
  }
  absl::StatusOr<LeaseInfo> lease = leases_->FindActive(req.lease_id(), caller->tenant);
  if (!lease.ok()) {
    Answer(conn.fd.get(), lease.status());
    return true;
  }
  absl::StatusOr<PagePool*> pool = pools_->Find(req.pool());
  if (!pool.ok()) {
    Answer(conn.fd.get(), pool.status());
    return true;
  }
  if (conn.info.id != 0 && (conn.info.tenant != caller->tenant || conn.info.pool != req.pool() ||
                            conn.info.lease != req.lease_id())) {
    Answer(conn.fd.get(), absl::InvalidArgumentError(
                              "this connection is attached to another tenant, lease or pool; "
                              "open a new one"));
    return true;
  }
  // Decode workers only read; prefill (and both) write KV in place.
  const bool writable = lease->role != WorkerRole::kDecode;
  if (!writable && (*pool)->device() != "cpu") {
    // A CUDA IPC mapping is always read-write: read-only cannot be enforced, so it is
    // refused rather than promised.
    Answer(conn.fd.get(), absl::FailedPreconditionError(absl::StrCat(
                              "pool '", req.pool(), "' is on ", (*pool)->device(),
                              ": CUDA IPC mappings are read-write, so a decode (read-only) lease "
                              "cannot attach it; read through DataPlane or ReadKV, or attach with "
                              "a prefill/both lease")));
    return true;
  }
  absl::flat_hash_map<uint32_t, uint64_t> known;
  for (const v1::ChunkRef& k : req.known_chunks()) known[k.chunk()] = k.generation();
  absl::StatusOr<std::vector<PagePool::ChunkShare>> shares =
      (*pool)->ShareTenantChunks(caller->tenant, /*read_only=*/!writable, known);
  if (!shares.ok()) {
    Answer(conn.fd.get(), shares.status());
    return true;
  }
  v1::AttachResponse resp;
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (PagePool::ChunkShare& s : *shares) {
    UniqueFd fd(s.fd);
    v1::AttachedChunk* c = resp.add_chunks();
    c->set_chunk(s.chunk);
    c->set_generation(s.generation);
    c->set_size((*pool)->chunk_bytes());
    c->set_writable(writable);
    c->set_cuda_ipc_handle(s.ipc_handle);
    c->set_has_fd(fd.valid());
    if (fd.valid()) fds.push_back(fd.get());
    owned.push_back(std::move(fd));
  }
  if (conn.info.id == 0) {
    size_t attached = 0;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& c : conns_) attached += c->info.id != 0 ? 1 : 0;
    }
    if (attached >= options_.max_connections) {
      Answer(conn.fd.get(), absl::ResourceExhaustedError(absl::StrFormat(
                                "the attach socket serves at most %d attached connections",
                                options_.max_connections)));
      return false;
    }
  }
  if (conn.info.id == 0 && options_.ledger != nullptr) {
    // Only this thread attaches connections: the count cannot grow before ours does.
    const TenantSpec spec = options_.ledger->spec(caller->tenant);
    uint32_t attached = 0;
    {
      absl::MutexLock lock(&mu_);
      attached = TenantConnectionsLocked(caller->tenant);
    }
    if (attached >= spec.limits.max_attach_connections) {
      options_.ledger->CountLimitRefusal(caller->tenant);
      Answer(conn.fd.get(),
             TenantLimitReached(spec, "max_attach_connections", spec.limits.max_attach_connections,
                                "attach connections"));
      return false;
    }
  }
  {
    absl::MutexLock lock(&mu_);
    if (conn.info.id == 0) {
      conn.info.id = RandomId();
      conn.info.tenant = caller->tenant;
      conn.info.lease = req.lease_id();
      conn.info.pool = req.pool();
      conn.info.writable = writable;
      conn.info.since = absl::Now();
      LogEvent(LogLevel::kInfo, "attach_opened")
          .Field("attachment", conn.info.id)
          .Field("tenant", TenantName(caller->tenant))
          .Field("lease", req.lease_id())
          .Field("pid", conn.info.pid)
          .Field("pool", req.pool())
          .Field("writable", writable);
    }
    conn.info.chunks += static_cast<uint32_t>(resp.chunks_size());
    resp.set_attachment_id(conn.info.id);
    resp.set_cuda_pci_bus_id((*pool)->device_ops().pci_bus_id());
  }
  return SendRecord(conn.fd.get(), resp.SerializeAsString(), fds).ok();
}

std::string AttachServer::TenantName(TenantId tenant) const {
  return options_.ledger != nullptr ? options_.ledger->name(tenant) : absl::StrCat(tenant);
}

uint32_t AttachServer::TenantConnectionsLocked(TenantId tenant) const {
  uint32_t n = 0;
  for (const auto& c : conns_) n += c->info.id != 0 && c->info.tenant == tenant ? 1 : 0;
  return n;
}

}  // namespace kvwarden
