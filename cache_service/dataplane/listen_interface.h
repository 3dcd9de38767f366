#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace kvwarden {

// The network interface(s) behind the host part of a gRPC listen address, in
// UCX_NET_DEVICES syntax, so that the data plane listens where the control plane does:
// "lo" for a loopback address or "localhost", the interface holding a specific
// address (e.g. "eth0"), "" (every interface) for a wildcard ("0.0.0.0", "[::]", "").
// NOT_FOUND when no interface holds the address.
absl::StatusOr<std::string> UcxNetDevicesForListenHost(const std::string& host);

// "HOST:PORT" or "[V6]:PORT" -> HOST / V6.
std::string ListenHost(const std::string& listen);

}  // namespace kvwarden
