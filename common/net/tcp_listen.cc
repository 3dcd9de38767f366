#include "common/net/tcp_listen.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kvwarden::net {

namespace {

// getaddrinfo's answer for a listening address; the caller frees it.
absl::StatusOr<addrinfo*> Resolve(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "': want HOST:PORT"));
  }
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  uint32_t p = 0;
  if (!absl::SimpleAtoi(port, &p) || p > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "': port '", port, "' is not in [0, 65535]"));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found);
      rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "': ", gai_strerror(rc)));
  }
  return found;
}

}  // namespace

absl::Status CheckListenAddress(const std::string& address) {
  absl::StatusOr<addrinfo*> found = Resolve(address);
  if (!found.ok()) return found.status();
  freeaddrinfo(*found);
  return absl::OkStatus();
}

absl::StatusOr<TcpListener> ListenTcp(const std::string& address, int backlog) {
  absl::StatusOr<addrinfo*> resolved = Resolve(address);
  if (!resolved.ok()) return resolved.status();
  addrinfo* found = *resolved;
  absl::Status last = absl::UnavailableError(absl::StrCat("'", address, "': no address"));
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    UniqueFd fd(socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) continue;
    const int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 || listen(fd.get(), backlog) != 0) {
      last = absl::UnavailableError(absl::StrCat("'", address, "': ", strerror(errno)));
      continue;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof(bound);
    getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len);
    TcpListener out;
    out.port =
        ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    out.fd = std::move(fd);
    freeaddrinfo(found);
    return out;
  }
  freeaddrinfo(found);
  return last;
}

}  // namespace kvwarden::net
