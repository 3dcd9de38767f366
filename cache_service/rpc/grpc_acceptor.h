#pragma once

// kvwardend accepts gRPC's TCP connections itself, so that it can count them: gRPC 1.51
// has no connection limit, and its own listener stops accepting for good after one
// EMFILE. Each accepted socket must send the HTTP/2 client preface (or, with TLS, the
// start of a TLS handshake record) within a deadline; then it is handed to the server
// (grpc::AddInsecureChannelFromFd, or with TLS an external connection acceptor that
// carries the server's credentials) and gRPC owns it.
//
// Limits: connections in total and per peer address (all same-host workers share
// 127.0.0.1, so the per-peer cap defaults high). A connection over a limit, or one that
// is not HTTP/2, is closed at once; at EMFILE a reserved fd is given up to accept and
// close the pending connection, so the listen queue never wedges.
//
// Threading: one thread, "kvw-accept", owns every socket until it is handed over. gRPC
// closes handed-over sockets on its own threads; the acceptor notices by fstat (the fd
// no longer names the socket's inode) whenever it needs an exact count, and once a second.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cache_service/rpc/connection_auth.h"
#include "common/fd/unique_fd.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace kvwarden {

struct GrpcConnectionLimits {
  uint32_t max_connections = 4096;           // open (handed over or awaiting the preface)
  uint32_t max_connections_per_peer = 1024;  // per remote IP address
  absl::Duration preface_timeout = absl::Seconds(5);
  // A handed-over connection on which no call authenticated by then is closed (its
  // socket shut down; gRPC then closes it). Needs `marks`; not for TLS connections,
  // whose peer gRPC does not name by fd. Zero: never.
  absl::Duration auth_timeout = absl::ZeroDuration();
  ConnectionAuthMarks* marks = nullptr;
};

// Written by the accept thread, read by ListPools from any thread.
struct GrpcConnectionStats {
  std::atomic<uint64_t> open{0};      // handed to gRPC and still open, plus those awaiting the preface
  std::atomic<uint64_t> accepted{0};  // handed to gRPC since start
  std::atomic<uint64_t> refused{0};   // closed at once: over a limit, not HTTP/2, no preface in time, EMFILE
  std::atomic<uint32_t> limit{0};     // max_connections (0: kvwardend does not accept itself)
};

class GrpcAcceptor {
 public:
  // Binds "HOST:PORT" or "[V6]:PORT" (port 0 picks one) and listens; connections wait in
  // the backlog until Serve(). `stats` must outlive the acceptor.
  static absl::StatusOr<std::unique_ptr<GrpcAcceptor>> Listen(const std::string& address,
                                                              GrpcConnectionLimits limits,
                                                              GrpcConnectionStats* stats);
  ~GrpcAcceptor();  // stops the thread and closes what it still owns
  GrpcAcceptor(const GrpcAcceptor&) = delete;
  GrpcAcceptor& operator=(const GrpcAcceptor&) = delete;

  int port() const { return port_; }
  // Starts the accept thread; `server` must outlive this acceptor. With `tls` (from
  // ServerBuilder's AddExternalConnectionAcceptor with TLS credentials; outlives this
  // acceptor), connections must open with a TLS record and go to it.
  absl::Status Serve(grpc::Server* server, grpc::experimental::ExternalConnectionAcceptor* tls = nullptr);

 private:
  struct Pending {
    UniqueFd fd;
    std::string peer;
    absl::Time deadline;
    // Bytes of a partial preface already seen. They stay in the socket (gRPC reads
    // them), so poll() would report it readable forever: such a socket is left out of
    // poll and peeked again every kRepeek instead.
    ssize_t peeked = 0;
  };
  struct Open {
    uint64_t inode = 0;
    std::string peer;
    absl::Time handed;
    bool reapable = false;  // plain HTTP/2 (peer "fd:N"), not shut down yet
  };

  GrpcAcceptor(GrpcConnectionLimits limits, GrpcConnectionStats* stats) : limits_(limits), stats_(stats) {}
  void Run();
  void AcceptAll();
  void CheckPending(absl::Time now);
  void Prune();  // forgets handed-over sockets gRPC has closed
  void Refuse(UniqueFd fd);
  void Forget(const std::string& peer);  // a counted connection of `peer` is gone
  uint64_t PeerCount(const std::string& peer) const;

  const GrpcConnectionLimits limits_;
  GrpcConnectionStats* const stats_;
  std::vector<UniqueFd> listen_fds_;  // one per address the host resolves to
  UniqueFd wake_fd_;     // eventfd: the destructor's stop signal
  UniqueFd reserve_fd_;  // given up at EMFILE to accept and close one connection
  int port_ = 0;
  grpc::experimental::ExternalConnectionAcceptor* tls_ = nullptr;
  grpc::Server* server_ = nullptr;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  // Owned by the accept thread.
  std::vector<Pending> pending_;
  absl::flat_hash_map<int, Open> open_;  // by fd
  absl::flat_hash_map<std::string, uint64_t> per_peer_;
  absl::Time last_emfile_log_ = absl::InfinitePast();
  absl::Time last_prune_ = absl::InfinitePast();
  absl::Time accept_paused_until_ = absl::InfinitePast();  // EMFILE with no reserve fd
};

}  // namespace kvwarden
