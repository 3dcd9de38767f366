#pragma once

// A blocking TCP connection to 127.0.0.1:`port`, for tests that speak to the daemon's
// sockets byte by byte as an attacker would. `recv_timeout` (when positive) bounds every
// recv on it, so a daemon that never answers fails the test instead of hanging it.

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstdint>

#include "absl/time/time.h"
#include "common/fd/unique_fd.h"
#include "gtest/gtest.h"

namespace kvwarden::testing {

inline UniqueFd ConnectLoopback(uint16_t port, absl::Duration recv_timeout = absl::ZeroDuration()) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  if (recv_timeout > absl::ZeroDuration()) {
    const timeval tv = absl::ToTimeval(recv_timeout);
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  return fd;
}

}  // namespace kvwarden::testing
