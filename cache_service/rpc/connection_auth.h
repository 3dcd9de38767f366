#pragma once

// Which gRPC connections have made an authenticated call. kvwardend hands each accepted
// socket to gRPC (grpc_acceptor.h), whose peer string for it is then "fd:N"; an
// interceptor marks N the first time a call on it carries a valid token, and the
// acceptor closes (shutdown) connections still unmarked after their deadline, so
// connections that never authenticate cannot hold the per-peer or total caps.
//
// Thread-safe and lock-free: Mark/Marked from gRPC threads, Clear from the acceptor
// when it hands a new socket over under the same fd number.

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include "cache_service/core/tenancy/authenticator.h"
#include "grpcpp/support/server_interceptor.h"

namespace kvwarden {

class ConnectionAuthMarks {
 public:
  static constexpr int kMaxFd = 1 << 20;  // fds past it are never reaped
  ConnectionAuthMarks() : marks_(new std::atomic<uint8_t>[kMaxFd]) {
    for (int i = 0; i < kMaxFd; ++i) marks_[i].store(0, std::memory_order_relaxed);
  }
  void Mark(int fd) {
    if (fd >= 0 && fd < kMaxFd && marks_[fd].load(std::memory_order_relaxed) == 0) {
      marks_[fd].store(1, std::memory_order_relaxed);
    }
  }
  bool Marked(int fd) const {
    return fd < 0 || fd >= kMaxFd || marks_[fd].load(std::memory_order_relaxed) != 0;
  }
  void Clear(int fd) {
    if (fd >= 0 && fd < kMaxFd) marks_[fd].store(0, std::memory_order_relaxed);
  }

 private:
  std::unique_ptr<std::atomic<uint8_t>[]> marks_;
};

// "fd:N" (gRPC's peer for a connection added from an fd) -> N; -1 otherwise.
int PeerFd(const std::string& peer);

// Marks a connection in `marks` when a call on it carries a token `auth` accepts.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewConnectionAuthInterceptorFactory(const Authenticator* auth, ConnectionAuthMarks* marks);

}  // namespace kvwarden
