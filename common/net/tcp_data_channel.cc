#include "common/net/tcp_data_channel.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvwarden::net {

std::string TargetHost(const std::string& target) {
  std::string t = target;
  for (const char* scheme : {"dns:///", "dns:", "ipv4:", "ipv6:"}) {
    if (absl::StartsWith(t, scheme)) {
      t = t.substr(strlen(scheme));
      break;
    }
  }
  if (absl::StartsWith(t, "unix:")) return "";
  if (!t.empty() && t.front() == '[') {
    const size_t close = t.find(']');
    return close == std::string::npos ? "" : t.substr(1, close - 1);
  }
  const size_t colon = t.rfind(':');
  return colon == std::string::npos ? t : t.substr(0, colon);
}

absl::StatusOr<TcpDataChannel> TcpDataChannel::Connect(const std::string& host, uint16_t port,
                                                       absl::Time deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = absl::StrCat(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("TCP data path ", host, ":", port, ": ", gai_strerror(rc)));
  }
  absl::Status last = absl::UnavailableError("no address");
  TcpDataChannel ch;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    UniqueFd fd(socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) continue;
    ch.fd_ = std::move(fd);
    if (connect(ch.fd_.get(), a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      last = absl::UnavailableError(
          absl::StrCat("TCP data path ", host, ":", port, ": connect: ", strerror(errno)));
      continue;
    }
    absl::Status ready = ch.Wait(POLLOUT, deadline);
    int err = 0;
    socklen_t len = sizeof(err);
    if (ready.ok()) getsockopt(ch.fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (!ready.ok() || err != 0) {
      last = ready.ok() ? absl::UnavailableError(absl::StrCat("TCP data path ", host, ":", port,
                                                              ": connect: ", strerror(err)))
                        : ready;
      continue;
    }
    const int one = 1;
    setsockopt(ch.fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    freeaddrinfo(found);
    return ch;
  }
  freeaddrinfo(found);
  return last;
}

absl::Status TcpDataChannel::Broken(absl::Status s) {
  fd_.reset();
  return s;
}

absl::Status TcpDataChannel::Wait(short events, absl::Time deadline) {
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError("TCP data path: the daemon did not answer in time");
    }
    pollfd p{fd_.get(), events, 0};
    const int n =
        poll(&p, 1, static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1000)));
    if (n > 0) return absl::OkStatus();
    if (n < 0 && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat("TCP data path: poll: ", strerror(errno)));
    }
  }
}

absl::Status TcpDataChannel::SendAll(const void* data, size_t n, absl::Time deadline) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t sent = send(fd_.get(), p, n, MSG_NOSIGNAL);
    if (sent > 0) {
      p += sent;
      n -= static_cast<size_t>(sent);
      continue;
    }
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (absl::Status s = Wait(POLLOUT, deadline); !s.ok()) return s;
      continue;
    }
    return absl::UnavailableError(absl::StrCat("TCP data path: send: ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status TcpDataChannel::RecvAll(void* data, size_t n, absl::Time deadline) {
  auto* p = static_cast<uint8_t*>(data);
  while (n > 0) {
    const ssize_t got = recv(fd_.get(), p, n, 0);
    if (got > 0) {
      p += got;
      n -= static_cast<size_t>(got);
      continue;
    }
    if (got == 0) return absl::UnavailableError("TCP data path: the daemon closed the connection");
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      if (absl::Status s = Wait(POLLIN, deadline); !s.ok()) return s;
      continue;
    }
    return absl::UnavailableError(absl::StrCat("TCP data path: recv: ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status TcpDataChannel::Move(uint64_t transfer_id, const net::DataSecret& secret, bool write,
                                  uint64_t page_bytes, absl::Span<const TcpPageOp> ops,
                                  absl::Time deadline) {
  if (!fd_.valid()) return absl::UnavailableError("TCP data path: not connected");
  // Requests first (reads: all headers; writes: header and pages each), then answers. The
  // daemon answers a write only after its pages, and reads in order, so nothing waits on
  // the other side's buffer.
  for (const TcpPageOp& op : ops) {
    net::DataRequestHeader h;
    h.op = static_cast<uint16_t>(write ? net::DataOp::kWrite : net::DataOp::kRead);
    h.transfer_id = transfer_id;
    h.secret = secret;
    h.layer_index = op.layer_index;
    h.first_page = op.first_page;
    h.page_count = op.page_count;
    h.payload_bytes = write ? uint64_t{op.page_count} * page_bytes : 0;
    if (absl::Status s = SendAll(&h, sizeof(h), deadline); !s.ok()) return Broken(s);
    if (write) {
      if (absl::Status s = SendAll(op.buf, h.payload_bytes, deadline); !s.ok()) {
        // A refused write closes the connection: its answer says why.
        net::DataResponseHeader r;
        std::string msg;
        if (RecvAll(&r, sizeof(r), absl::Now() + absl::Milliseconds(200)).ok() &&
            r.magic == net::kDataResponseMagic && r.code != 0 &&
            r.message_bytes <= net::kMaxDataMessageBytes) {
          msg.resize(r.message_bytes);
          if (RecvAll(msg.data(), msg.size(), absl::Now() + absl::Milliseconds(200)).ok()) {
            return Broken(absl::Status(static_cast<absl::StatusCode>(r.code), msg));
          }
        }
        return Broken(s);
      }
    }
  }
  absl::Status first;
  for (const TcpPageOp& op : ops) {
    net::DataResponseHeader r;
    // The daemon closes after some refusals: then the refusal is the answer.
    if (absl::Status s = RecvAll(&r, sizeof(r), deadline); !s.ok()) {
      return Broken(first.ok() ? s : first);
    }
    if (r.magic != net::kDataResponseMagic || r.message_bytes > net::kMaxDataMessageBytes ||
        r.code > 16) {
      return Broken(absl::UnavailableError("TCP data path: not a kvwarden data response"));
    }
    std::string msg(r.message_bytes, '\0');
    if (absl::Status s = RecvAll(msg.data(), msg.size(), deadline); !s.ok()) return Broken(s);
    const uint64_t expected = (r.code == 0 && !write) ? uint64_t{op.page_count} * page_bytes : 0;
    if (r.payload_bytes != expected) {
      return Broken(absl::UnavailableError(
          absl::StrFormat("TCP data path: the daemon sent %d bytes for a request of %d",
                          r.payload_bytes, expected)));
    }
    if (expected != 0) {
      if (absl::Status s = RecvAll(op.buf, expected, deadline); !s.ok()) return Broken(s);
    }
    if (r.code != 0) {
      first.Update(absl::Status(static_cast<absl::StatusCode>(r.code), msg));
      // The daemon closes after refusing a write (its payload was not read as pages).
      if (write) return Broken(first);
    }
  }
  return first;
}

}  // namespace kvwarden::net
