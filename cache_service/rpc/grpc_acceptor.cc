#include "cache_service/rpc/grpc_acceptor.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cache_service/dataplane/listen_interface.h"
#include "cache_service/util/log.h"
#include "grpcpp/server_posix.h"

namespace kvwarden {
namespace {

// What every HTTP/2 client sends first (RFC 9113, 3.4).
constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr size_t kPrefaceBytes = sizeof(kPreface) - 1;

absl::Status Errno(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// The peer's IP address as text; an IPv4-mapped IPv6 address as plain IPv4, so a
// dual-stack listener counts one host once.
std::string PeerAddress(const sockaddr_storage& addr) {
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(addr).sin_addr, text, sizeof(text));
  } else if (addr.ss_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<const sockaddr_in6&>(addr).sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a)) {
      inet_ntop(AF_INET, &a.s6_addr[12], text, sizeof(text));
    } else {
      inet_ntop(AF_INET6, &a, text, sizeof(text));
    }
  }
  return text;
}

uint64_t Inode(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) ? st.st_ino : 0;
}

UniqueFd OpenReserve() { return UniqueFd(open("/dev/null", O_RDONLY | O_CLOEXEC)); }

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcAcceptor>> GrpcAcceptor::Listen(const std::string& address,
                                                                   GrpcConnectionLimits limits,
                                                                   GrpcConnectionStats* stats) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("listen address '", address, "' is not HOST:PORT"));
  }
  if (limits.max_connections == 0 || limits.max_connections_per_peer == 0) {
    return absl::InvalidArgumentError("connection limits must be >= 1");
  }
  std::string host = ListenHost(address);
  const bool wildcard = host.empty() || host == "0.0.0.0" || host == "::" || host == "*";
  std::unique_ptr<GrpcAcceptor> a(new GrpcAcceptor(limits, stats));

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  // A wildcard binds one dual-stack IPv6 socket (IPv4 arrives mapped), or IPv4 alone on
  // hosts without IPv6; a host name or address binds every address it resolves to.
  std::vector<std::string> nodes = wildcard ? std::vector<std::string>{"::", "0.0.0.0"} : std::vector<std::string>{host};
  std::string last_error;
  for (const std::string& node : nodes) {
    if (!a->listen_fds_.empty()) break;
    addrinfo* found = nullptr;
    if (int rc = getaddrinfo(node.c_str(), "0", &hints, &found); rc != 0) {
      last_error = gai_strerror(rc);
      continue;
    }
    for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
      UniqueFd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
      if (!fd.valid()) {
        last_error = std::strerror(errno);
        continue;
      }
      const int one = 1, zero = 0;
      setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      if (ai->ai_family == AF_INET6) {
        setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, wildcard ? &zero : &one, sizeof(int));
      }
      // Every address of the host on one port: the first bind picks it when it is 0.
      sockaddr_storage at{};
      std::memcpy(&at, ai->ai_addr, ai->ai_addrlen);
      const uint16_t net_port = htons(static_cast<uint16_t>(a->port_ != 0 ? a->port_ : port));
      if (at.ss_family == AF_INET) reinterpret_cast<sockaddr_in&>(at).sin_port = net_port;
      if (at.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6&>(at).sin6_port = net_port;
      if (bind(fd.get(), reinterpret_cast<sockaddr*>(&at), ai->ai_addrlen) != 0 ||
          listen(fd.get(), SOMAXCONN) != 0) {
        last_error = std::strerror(errno);
        continue;
      }
      socklen_t len = sizeof(at);
      getsockname(fd.get(), reinterpret_cast<sockaddr*>(&at), &len);
      a->port_ = ntohs(at.ss_family == AF_INET ? reinterpret_cast<sockaddr_in&>(at).sin_port
                                               : reinterpret_cast<sockaddr_in6&>(at).sin6_port);
      a->listen_fds_.push_back(std::move(fd));
    }
    freeaddrinfo(found);
  }
  if (a->listen_fds_.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", last_error));
  }
  a->wake_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!a->wake_fd_.valid()) return Errno("eventfd");
  a->reserve_fd_ = OpenReserve();
  stats->limit = limits.max_connections;
  return a;
}

absl::Status GrpcAcceptor::Serve(grpc::Server* server, grpc::experimental::ExternalConnectionAcceptor* tls) {
  if (server == nullptr || thread_.joinable()) return absl::FailedPreconditionError("Serve: once, with a server");
  server_ = server;
  tls_ = tls;
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kvw-accept");
    Run();
  });
  return absl::OkStatus();
}

GrpcAcceptor::~GrpcAcceptor() {
  stop_ = true;
  if (wake_fd_.valid()) {
    const uint64_t one = 1;
    (void)!write(wake_fd_.get(), &one, sizeof(one));
  }
  if (thread_.joinable()) thread_.join();
}

// How often a socket that sent part of its preface is looked at again (it is out of
// poll's set: its unread bytes would make poll return at once, forever).
constexpr absl::Duration kRepeek = absl::Milliseconds(20);

void GrpcAcceptor::Run() {
  std::vector<pollfd> fds;
  while (!stop_) {
    const absl::Time now = absl::Now();
    fds.clear();
    fds.push_back({wake_fd_.get(), POLLIN, 0});
    const bool accepting = now >= accept_paused_until_;
    for (const UniqueFd& l : listen_fds_) fds.push_back({l.get(), static_cast<short>(accepting ? POLLIN : 0), 0});
    absl::Time next = now + absl::Seconds(1);
    if (!accepting) next = std::min(next, accept_paused_until_);
    for (const Pending& p : pending_) {
      next = std::min(next, p.deadline);
      if (p.peeked > 0) {
        next = std::min(next, now + kRepeek);  // see Pending::peeked
      } else {
        fds.push_back({p.fd.get(), POLLIN, 0});
      }
    }
    const int timeout_ms = static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(next - now) + 1, 0, 1000));
    if (poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      LogEvent(LogLevel::kError, "grpc_accept_poll_failed").Field("error", std::strerror(errno));
      absl::SleepFor(absl::Milliseconds(10));
      continue;
    }
    if (fds[0].revents != 0 || stop_) break;
    const absl::Time after = absl::Now();
    CheckPending(after);
    bool listen_ready = false;
    for (size_t i = 1; i <= listen_fds_.size(); ++i) listen_ready |= fds[i].revents != 0;
    // A count is exact when it matters (a new connection) and fresh once a second.
    if (listen_ready || after - last_prune_ >= absl::Seconds(1)) Prune();
    if (listen_ready) AcceptAll();
  }
}

void GrpcAcceptor::AcceptAll() {
  for (const UniqueFd& l : listen_fds_) {
    for (;;) {
      sockaddr_storage addr{};
      socklen_t len = sizeof(addr);
      UniqueFd fd(accept4(l.get(), reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd.valid()) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE) {
          // Out of fds: give up the reserve to take the connection off the queue and
          // close it, so the listener keeps draining; take the reserve back after.
          const absl::Time now = absl::Now();
          if (now - last_emfile_log_ >= absl::Seconds(10)) {
            LogEvent(LogLevel::kWarning, "fds_exhausted").Field("what", "gRPC connections refused until fds free");
            last_emfile_log_ = now;
          }
          bool drained = false;
          if (reserve_fd_.valid()) {
            reserve_fd_.reset();
            drained = UniqueFd(accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC)).valid();
            reserve_fd_ = OpenReserve();
          }
          if (drained) {
            ++stats_->refused;
            continue;
          }
          // Another thread took the freed fd: wait a little rather than spin.
          if (!reserve_fd_.valid()) reserve_fd_ = OpenReserve();
          accept_paused_until_ = now + absl::Milliseconds(50);
        }
        break;  // EAGAIN, or an error for this round
      }
      const std::string peer = PeerAddress(addr);
      if (stats_->open.load() >= limits_.max_connections ||
          PeerCount(peer) >= limits_.max_connections_per_peer) {
        Refuse(std::move(fd));
        continue;
      }
      const int one = 1;
      setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      ++per_peer_[peer];
      ++stats_->open;
      pending_.push_back({std::move(fd), peer, absl::Now() + limits_.preface_timeout});
    }
  }
}

void GrpcAcceptor::CheckPending(absl::Time now) {
  for (size_t i = 0; i < pending_.size();) {
    Pending& p = pending_[i];
    char head[kPrefaceBytes];
    const ssize_t n = recv(p.fd.get(), head, sizeof(head), MSG_PEEK | MSG_DONTWAIT);
    enum { kWait, kHandOver, kRefuse, kGone } verdict = kWait;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      verdict = kGone;
    } else if (n > 0 && tls_ != nullptr) {
      // A TLS handshake record (content type 22, version 3.x); gRPC's own handshake
      // deadline covers the rest of the handshake.
      if (head[0] != 0x16 || (n >= 2 && head[1] != 0x03)) verdict = kRefuse;
      else if (n >= 2) verdict = kHandOver;
    } else if (n > 0) {
      if (std::memcmp(head, kPreface, n) != 0) verdict = kRefuse;  // not HTTP/2 (e.g. TLS, or garbage)
      else if (n == static_cast<ssize_t>(kPrefaceBytes)) verdict = kHandOver;
    }
    if (verdict == kWait && now >= p.deadline) verdict = kRefuse;
    if (verdict == kWait) {
      if (n > 0) p.peeked = n;
      ++i;
      continue;
    }
    std::string peer = std::move(p.peer);
    UniqueFd fd = std::move(p.fd);
    pending_[i] = std::move(pending_.back());
    pending_.pop_back();
    if (verdict == kHandOver) {
      const uint64_t inode = Inode(fd.get());
      if (inode == 0) {
        verdict = kRefuse;
      } else {
        const int raw = fd.release();
        // An entry under this number is a socket gRPC closed since the last prune.
        if (auto stale = open_.find(raw); stale != open_.end()) {
          Forget(stale->second.peer);
        }
        const bool reapable = tls_ == nullptr && limits_.marks != nullptr &&
                              limits_.auth_timeout > absl::ZeroDuration();
        if (limits_.marks != nullptr) limits_.marks->Clear(raw);  // a new connection on this fd
        open_[raw] = {inode, std::move(peer), now, reapable};
        ++stats_->accepted;
        if (tls_ != nullptr) {
          grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters params;
          params.listener_fd = listen_fds_.front().get();
          params.fd = raw;
          tls_->HandleNewConnection(&params);  // gRPC owns (and closes) it now
        } else {
          grpc::AddInsecureChannelFromFd(server_, raw);  // gRPC owns (and closes) it now
        }
        continue;
      }
    }
    Forget(peer);
    if (verdict == kRefuse) {
      Refuse(std::move(fd));
    }
  }
}

void GrpcAcceptor::Prune() {
  last_prune_ = absl::Now();
  for (auto it = open_.begin(); it != open_.end();) {
    if (Inode(it->first) == it->second.inode) {
      Open& o = it->second;
      if (o.reapable && last_prune_ - o.handed > limits_.auth_timeout &&
          !limits_.marks->Marked(it->first)) {
        // Never authenticated: end it. shutdown, not close: gRPC owns the fd and closes
        // it when it reads the end; the inode check above keeps this to our socket.
        shutdown(it->first, SHUT_RDWR);
        o.reapable = false;
        ++stats_->refused;
      }
      ++it;
      continue;
    }
    Forget(it->second.peer);
    open_.erase(it++);
  }
}

void GrpcAcceptor::Forget(const std::string& peer) {
  if (--per_peer_[peer] == 0) per_peer_.erase(peer);
  --stats_->open;
}

void GrpcAcceptor::Refuse(UniqueFd fd) {
  ++stats_->refused;
  fd.reset();
}

uint64_t GrpcAcceptor::PeerCount(const std::string& peer) const {
  auto it = per_peer_.find(peer);
  return it == per_peer_.end() ? 0 : it->second;
}

}  // namespace kvwarden
