#pragma once

// A non-blocking listening TCP socket on "HOST:PORT" or "[V6]:PORT" ("" host = every
// interface; port 0 picks a free one), for the daemon's own listeners (the TCP data
// path, /metrics).

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/fd/unique_fd.h"

namespace kvwarden::net {

struct TcpListener {
  UniqueFd fd;
  uint16_t port = 0;  // the port bound (the one chosen when 0 was asked for)
};

// INVALID_ARGUMENT for an address that does not parse or resolve; UNAVAILABLE when it
// cannot be bound.
absl::StatusOr<TcpListener> ListenTcp(const std::string& address, int backlog = 256);

// Whether ListenTcp could use `address`: it parses, its port is in [0, 65535] and its
// host resolves; INVALID_ARGUMENT naming what is wrong. Binds nothing (flag checks).
absl::Status CheckListenAddress(const std::string& address);

}  // namespace kvwarden::net
