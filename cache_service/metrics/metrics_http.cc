#include "cache_service/metrics/metrics_http.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/net/tcp_listen.h"

namespace kvwarden {
namespace {

constexpr size_t kMaxRequestBytes = 8192;

std::string Response(absl::string_view status, absl::string_view type, const std::string& body,
                     bool head) {
  std::string out = absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                                 "\r\nContent-Length: ", body.size(),
                                 "\r\nConnection: close\r\n\r\n");
  if (!head) out += body;
  return out;
}

}  // namespace

class MetricsHttp::Loop {
 public:
  Loop(const Options& options, std::function<std::string()> render, int listener, int wake)
      : options_(options), render_(std::move(render)), listener_(listener), wake_(wake) {}

  absl::Status Init() {
    epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_.valid()) return absl::InternalError(absl::StrCat("epoll_create1: ", strerror(errno)));
    for (auto [fd, tag] : {std::pair{listener_, kListener}, std::pair{wake_, kWake}}) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = tag;
      if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
        return absl::InternalError(absl::StrCat("epoll_ctl: ", strerror(errno)));
      }
    }
    return absl::OkStatus();
  }

  void Run() {
    epoll_event events[32];
    for (;;) {
      const int n = epoll_wait(epoll_.get(), events, 32, 250);
      if (n < 0 && errno != EINTR) return;
      for (int i = 0; i < n; ++i) {
        const uint64_t tag = events[i].data.u64;
        if (tag == kWake) return;
        if (tag == kListener) {
          Accept();
        } else if (auto it = conns_.find(tag); it != conns_.end()) {
          if (!Serve(tag, it->second)) Close(tag);
        }
      }
      const absl::Time now = absl::Now();
      std::vector<uint64_t> late;
      for (const auto& [tag, c] : conns_) {
        if (now > c.deadline) late.push_back(tag);
      }
      for (uint64_t tag : late) Close(tag);
      if (paused_until_ != absl::InfinitePast() && now >= paused_until_) {
        paused_until_ = absl::InfinitePast();
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = kListener;
        epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_, &ev);
      }
    }
  }

 private:
  static constexpr uint64_t kListener = 0, kWake = 1;
  struct Conn {
    UniqueFd fd;
    absl::Time deadline;
    std::string in;
    std::string out;
    size_t sent = 0;
  };

  void Accept() {
    for (;;) {
      const int fd = accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener_, nullptr);  // no spin; back soon
          paused_until_ = absl::Now() + absl::Milliseconds(100);
        }
        return;
      }
      if (conns_.size() >= options_.max_connections) Close(conns_.begin()->first);  // oldest
      const uint64_t tag = next_tag_++;
      Conn& c = conns_[tag];
      c.fd.reset(fd);
      c.deadline = absl::Now() + options_.request_deadline;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = tag;
      if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) conns_.erase(tag);
    }
  }

  void Close(uint64_t tag) {
    auto it = conns_.find(tag);
    if (it == conns_.end()) return;
    epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.fd.get(), nullptr);
    conns_.erase(it);
  }

  // False: close the connection.
  bool Serve(uint64_t tag, Conn& c) {
    if (c.out.empty()) {
      char buf[4096];
      for (;;) {
        const ssize_t got = recv(c.fd.get(), buf, sizeof(buf), 0);
        if (got == 0) return false;
        if (got < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
          return false;
        }
        c.in.append(buf, static_cast<size_t>(got));
        if (c.in.size() > kMaxRequestBytes) return false;
      }
      if (c.in.find("\r\n\r\n") == std::string::npos) return true;
      c.out = Answer(c.in);
      epoll_event ev{};
      ev.events = EPOLLOUT;
      ev.data.u64 = tag;
      epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
    }
    while (c.sent < c.out.size()) {
      const ssize_t sent = send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (sent < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      c.sent += static_cast<size_t>(sent);
    }
    return false;  // all sent: Connection: close
  }

  std::string Answer(const std::string& request) {
    const std::string line = request.substr(0, request.find("\r\n"));
    const bool get = absl::StartsWith(line, "GET "), head = absl::StartsWith(line, "HEAD ");
    if (!get && !head) return Response("405 Method Not Allowed", "text/plain", "GET /metrics\n", false);
    const size_t path_at = line.find(' ') + 1;
    std::string path = line.substr(path_at, line.find(' ', path_at) - path_at);
    path = path.substr(0, path.find('?'));
    if (path != "/metrics") return Response("404 Not Found", "text/plain", "see /metrics\n", head);
    return Response("200 OK", "text/plain; version=0.0.4; charset=utf-8", render_(), head);
  }

  const Options options_;
  const std::function<std::string()> render_;
  const int listener_, wake_;
  UniqueFd epoll_;
  std::map<uint64_t, Conn> conns_;  // by tag: begin() is the oldest
  uint64_t next_tag_ = 2;
  absl::Time paused_until_ = absl::InfinitePast();
};

absl::StatusOr<std::unique_ptr<MetricsHttp>> MetricsHttp::Start(const Options& options,
                                                                std::function<std::string()> render) {
  absl::StatusOr<net::TcpListener> listener = net::ListenTcp(options.listen);
  if (!listener.ok()) return listener.status();
  std::unique_ptr<MetricsHttp> m(new MetricsHttp());
  m->port_ = listener->port;
  m->listener_ = std::move(listener->fd);
  m->wake_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!m->wake_.valid()) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  m->loop_ = std::make_unique<Loop>(options, std::move(render), m->listener_.get(), m->wake_.get());
  if (absl::Status s = m->loop_->Init(); !s.ok()) return s;
  Loop* loop = m->loop_.get();
  m->thread_ = std::thread([loop] {
    pthread_setname_np(pthread_self(), "kvw-metrics");
    loop->Run();
  });
  return m;
}

MetricsHttp::~MetricsHttp() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof(one));
    thread_.join();
  }
}

}  // namespace kvwarden
