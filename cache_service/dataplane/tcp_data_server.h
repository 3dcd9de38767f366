#pragma once

// TcpDataServer: the data path for workers that are not on the daemon's host (and for
// any worker that asks for "tcp"). The daemon never exposes its memory to a network
// peer: UCX's TCP transport writes wherever a peer's PUT says and serves its emulated
// GET from any address, with no key check (uct_tcp_ep_handle_put_req, ucp's software
// RMA), so kvwardend's UCX worker runs only shared-memory transports and this server
// moves pages over TCP instead. A request names a transfer grant and its secret (both
// from BeginTransfer over gRPC), a layer of the grant and a page range; the server
// checks them against the table (SequenceTable::WithTransferPages) and copies the
// pages itself. Wire format: common/net/data_frames.h.
//
// One thread, "kvw-data", serves every connection with epoll and non-blocking sockets,
// so a slow or stalled peer holds only its own connection. Bytes move through a
// per-connection buffer of about 1 MiB (given back after a second between requests): the
// table's lock is held for one bounded copy, never while waiting on a socket.
//
// Limits (a tenant must not starve another, an unauthenticated peer must not starve
// anyone): a connection is unauthenticated until its first request names a live grant;
// at most `max_unauthenticated` such connections exist (a new one evicts the oldest,
// so a flood cannot keep tenants from connecting) and each must authenticate within
// `auth_deadline`. Authenticated connections count against their tenant
// (`max_per_tenant`) and the total (`max_connections`). A connection that makes no
// progress for `idle_timeout` is closed.
//
// Thread-safety: all state belongs to "kvw-data"; the owner only starts and destroys it.

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "common/fd/unique_fd.h"

namespace kvwarden {

class TcpDataServer {
 public:
  struct Options {
    // "HOST:PORT" or "[V6]:PORT"; port 0 picks a free one (port() says which).
    std::string listen = "127.0.0.1:0";
    uint32_t max_connections = 1024;
    uint32_t max_per_tenant = 64;
    uint32_t max_unauthenticated = 128;
    absl::Duration auth_deadline = absl::Seconds(5);
    absl::Duration idle_timeout = absl::Minutes(2);
  };

  static absl::StatusOr<std::unique_ptr<TcpDataServer>> Start(const Options& options,
                                                              const SequenceTable* table);
  ~TcpDataServer();
  TcpDataServer(const TcpDataServer&) = delete;
  TcpDataServer& operator=(const TcpDataServer&) = delete;

  uint16_t port() const { return port_; }

 private:
  struct Conn;
  class Loop;
  TcpDataServer() = default;

  UniqueFd listener_;
  UniqueFd wake_;  // eventfd: stop
  uint16_t port_ = 0;
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
};

}  // namespace kvwarden
