#pragma once

// AttachServer: same-host workers map their tenant's chunks directly. A worker connects
// to a SOCK_SEQPACKET Unix socket, sends an AttachRequest (token, lease, pool) and gets
// one fd per chunk its tenant owns (SCM_RIGHTS), opened read-only for decode workers and
// read-write for prefill/both, so it reads pages in place with no copy. It asks again on
// the same connection for chunks its tenant gained (or that were renewed) since.
//
// Isolation: a chunk's fd goes only to its current tenant; a chunk changing hands gets
// fresh memory (ChunkMemory::Renew), so an fd kept from before never sees the new
// tenant's bytes. Bad requests get an AttachResponse with a gRPC code and message.
//
// One thread, "kvw-attach", serves every connection (poll); requests are small and rare
// (once per worker plus once per new chunk). An attachment lasts while its connection is
// open and its worker lease is active. Thread-safe: List() from any thread.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cache_service/core/tenancy/authenticator.h"
#include "cache_service/core/memory/pool_set.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "cache_service/core/tenancy/worker_leases.h"
#include "common/fd/unique_fd.h"

namespace kvwarden {

struct AttachmentSnapshot {
  uint64_t id = 0;
  TenantId tenant = kNoTenant;
  LeaseId lease = 0;
  std::string pool;
  int pid = 0;
  bool writable = false;
  uint32_t chunks = 0;
  absl::Time since;
};

// Serves the attach socket on one thread, "kvw-attach", with non-blocking sockets: an
// answer the peer does not read (its socket buffer full) closes that connection rather
// than stalling the others. Attached connections are capped in total and per tenant
// (TenantLimits.max_attach_connections). Connections that have not attached yet are
// capped apart (kMaxUnattached; a new one closes the oldest, so a flood of them cannot
// hold the room tenants attach into) and each is closed after kAuthDeadline.
struct AttachServerOptions {
  size_t max_connections = 1024;  // attached, in total
  TenantLedger* ledger = nullptr;  // per-tenant caps (and refusal counts); null = none
};

class AttachServer {
 public:
  using Options = AttachServerOptions;
  static constexpr absl::Duration kAuthDeadline = absl::Seconds(5);
  static constexpr size_t kMaxUnattached = 64;

  // Binds `path` (an existing socket file there is replaced) with mode 0660.
  static absl::StatusOr<std::unique_ptr<AttachServer>> Start(const std::string& path,
                                                             const PoolSet* pools,
                                                             const Authenticator* auth,
                                                             const WorkerLeases* leases,
                                                             Options options = Options());
  ~AttachServer();  // closes every connection and removes the socket file
  AttachServer(const AttachServer&) = delete;
  AttachServer& operator=(const AttachServer&) = delete;

  const std::string& path() const { return path_; }
  std::vector<AttachmentSnapshot> List() const;

 private:
  struct Connection {
    UniqueFd fd;
    AttachmentSnapshot info;  // id 0 until the first request succeeds
    absl::Time accepted;
  };
  AttachServer(std::string path, const PoolSet* pools, const Authenticator* auth,
               const WorkerLeases* leases, Options options);
  // The tenant's name for logs (its id when there is no ledger).
  std::string TenantName(TenantId tenant) const;
  // Attached connections of `tenant` (under mu_).
  uint32_t TenantConnectionsLocked(TenantId tenant) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Serve();
  // Answers one request; false when the connection should close.
  bool Handle(Connection& conn);

  const std::string path_;
  const PoolSet* const pools_;
  const Authenticator* const auth_;
  const WorkerLeases* const leases_;
  const Options options_;
  UniqueFd listen_fd_;
  UniqueFd wake_fd_;  // eventfd: wakes Serve to stop
  std::atomic<bool> stop_{false};
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Connection>> conns_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace kvwarden
