#include "cache_service/dataplane/tcp_data_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <list>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/net/data_frames.h"
#include "common/net/tcp_listen.h"

namespace kvwarden {
namespace {

using net::DataOp;
using net::DataRequestHeader;
using net::DataResponseHeader;

constexpr size_t kCopyBytes = size_t{1} << 20;  // one bounded copy under the table's lock

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", strerror(errno)));
}

}  // namespace

struct TcpDataServer::Conn {
  UniqueFd fd;
  uint64_t serial = 0;  // order of arrival, for evicting the oldest unauthenticated
  absl::Time opened;
  absl::Time last_progress;
  TenantId tenant = kNoTenant;  // set once a request named a live grant
  bool authenticated = false;
  bool close_after_send = false;

  // kDrain: the connection is closing after a refusal; what the peer still sends is
  // dropped for a moment so that the refusal reaches it (a close with unread bytes
  // would reset the connection and lose it).
  enum class Phase { kHeader, kWritePayload, kSend, kDrain } phase = Phase::kHeader;
  absl::Time drain_until;
  DataRequestHeader hdr;
  size_t hdr_have = 0;

  // The request in progress (after its header was accepted).
  uint64_t page_bytes = 0;
  uint32_t pages_done = 0;  // pages of the request copied so far
  absl::Status write_status;

  std::vector<uint8_t> buf;  // pages in transit
  size_t buf_have = 0;       // write: bytes received into buf

  // Output: `out` (a response header and message, then maybe buf[0, out_buf)) is sent in
  // order; for reads, more pages are copied out as the previous piece is sent.
  std::string out;
  size_t out_sent = 0;
  size_t out_buf = 0, out_buf_sent = 0;
  bool reading = false;  // a read's pages follow the header
};

class TcpDataServer::Loop {
 public:
  Loop(const Options& options, const SequenceTable* table, int listener, int wake)
      : options_(options), table_(table), listener_(listener), wake_(wake) {}

  absl::Status Init() {
    epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_.valid()) return Errno("epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerTag;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_, &ev) != 0) return Errno("epoll_ctl");
    ev.data.u64 = kWakeTag;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_, &ev) != 0) return Errno("epoll_ctl");
    return absl::OkStatus();
  }

  void Run() {
    std::vector<epoll_event> events(64);
    for (;;) {
      const int n = epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), 500);
      if (n < 0 && errno != EINTR) break;
      for (int i = 0; i < n; ++i) {
        const uint64_t tag = events[i].data.u64;
        if (tag == kWakeTag) return;
        if (tag == kListenerTag) {
          AcceptAll();
          continue;
        }
        auto it = conns_.find(tag);
        if (it == conns_.end()) continue;
        Serve(*it->second, events[i].events);
      }
      Sweep();
    }
  }

 private:
  static constexpr uint64_t kListenerTag = 0, kWakeTag = 1;

  void AcceptAll() {
    for (;;) {
      const int fd = accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // The pending connection stays queued and the listener readable: stop watching
          // it for a while instead of spinning on it.
          epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener_, nullptr);
          listener_paused_until_ = absl::Now() + absl::Milliseconds(100);
        }
        return;
      }
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      if (unauthenticated_ >= options_.max_unauthenticated) EvictOldestUnauthenticated();
      auto c = std::make_unique<Conn>();
      c->fd.reset(fd);
      c->serial = ++serial_;
      c->opened = c->last_progress = absl::Now();
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = c->serial + 2;
      if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) continue;  // c closes fd
      ++unauthenticated_;
      conns_.emplace(c->serial + 2, std::move(c));
    }
  }

  void EvictOldestUnauthenticated() {
    uint64_t oldest = 0;
    for (const auto& [tag, c] : conns_) {
      if (!c->authenticated && (oldest == 0 || tag < oldest)) oldest = tag;
    }
    if (oldest != 0) Close(oldest);
  }

  void Close(uint64_t tag) {
    auto it = conns_.find(tag);
    if (it == conns_.end()) return;
    Conn& c = *it->second;
    epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
    if (c.authenticated) {
      if (--per_tenant_[c.tenant] == 0) per_tenant_.erase(c.tenant);
      --authenticated_;
    } else {
      --unauthenticated_;
    }
    conns_.erase(it);
  }

  void Sweep() {
    const absl::Time now = absl::Now();
    std::vector<uint64_t> expired;
    for (const auto& [tag, c] : conns_) {
      if ((c->phase == Conn::Phase::kDrain && now > c->drain_until) ||
          (!c->authenticated && now - c->opened > options_.auth_deadline) ||
          now - c->last_progress > options_.idle_timeout) {
        expired.push_back(tag);
      }
      // Between requests an idle connection gives its copy buffer back: memory is held
      // (at most ~1 MiB each) only by connections moving pages.
      if (c->phase == Conn::Phase::kHeader && c->hdr_have == 0 && !c->buf.empty() &&
          now - c->last_progress > absl::Seconds(1)) {
        std::vector<uint8_t>().swap(c->buf);
      }
    }
    for (uint64_t tag : expired) Close(tag);
    if (listener_paused_until_ != absl::InfinitePast() && now >= listener_paused_until_) {
      listener_paused_until_ = absl::InfinitePast();
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kListenerTag;
      epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_, &ev);
    }
  }

  void Want(Conn& c, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = c.serial + 2;
    epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
  }

  // Runs the connection as far as its socket allows.
  void Serve(Conn& c, uint32_t events) {
    const uint64_t tag = c.serial + 2;
    if ((events & (EPOLLERR | EPOLLHUP)) != 0 &&
        (c.phase == Conn::Phase::kHeader || c.phase == Conn::Phase::kWritePayload)) {
      Close(tag);
      return;
    }
    for (;;) {
      bool progressed = false;
      bool alive = true;
      switch (c.phase) {
        case Conn::Phase::kHeader:
          alive = ReadHeader(c, &progressed);
          break;
        case Conn::Phase::kWritePayload:
          alive = ReadPayload(c, &progressed);
          break;
        case Conn::Phase::kSend:
          alive = Send(c, &progressed);
          break;
        case Conn::Phase::kDrain:
          alive = Drain(c);
          break;
      }
      if (!alive) {
        Close(tag);
        return;
      }
      if (!progressed || c.phase == Conn::Phase::kDrain) break;
      c.last_progress = absl::Now();
    }
    Want(c, c.phase == Conn::Phase::kSend ? EPOLLOUT : EPOLLIN);
  }

  // recv() into [dst, dst + n): bytes read, 0 = would block; -1 = closed or failed.
  ssize_t Recv(Conn& c, void* dst, size_t n) {
    const ssize_t got = recv(c.fd.get(), dst, n, 0);
    if (got > 0) {
      return got;
    }
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    return -1;
  }

  bool ReadHeader(Conn& c, bool* progressed) {
    auto* dst = reinterpret_cast<uint8_t*>(&c.hdr) + c.hdr_have;
    const ssize_t got = Recv(c, dst, sizeof(c.hdr) - c.hdr_have);
    if (got < 0) return false;
    if (got == 0) return true;
    *progressed = true;
    c.hdr_have += static_cast<size_t>(got);
    if (c.hdr_have < sizeof(c.hdr)) return true;
    c.hdr_have = 0;
    StartRequest(c);
    return true;
  }

  // Answers `s` (no pages); `close` ends the connection once the answer is out.
  void Respond(Conn& c, const absl::Status& s, bool close) {
    DataResponseHeader r;
    r.code = static_cast<uint32_t>(s.code());
    const std::string msg(s.message().substr(0, net::kMaxDataMessageBytes));
    r.message_bytes = static_cast<uint32_t>(msg.size());
    c.out.assign(reinterpret_cast<const char*>(&r), sizeof(r));
    c.out += msg;
    c.out_sent = 0;
    c.out_buf = c.out_buf_sent = 0;
    c.reading = false;
    c.close_after_send = close;
    c.phase = Conn::Phase::kSend;
  }

  // Looks the grant up for the whole request; authenticates the connection.
  void StartRequest(Conn& c) {
    const DataRequestHeader& h = c.hdr;
    if (h.magic != net::kDataRequestMagic || h.version != net::kDataVersion) {
      Respond(c, absl::InvalidArgumentError("not a kvwarden data request (magic or version)"),
              true);
      return;
    }
    const bool write = h.op == static_cast<uint16_t>(DataOp::kWrite);
    if (!write && h.op != static_cast<uint16_t>(DataOp::kRead)) {
      Respond(c, absl::InvalidArgumentError(absl::StrCat("op: unknown (", h.op, ")")), true);
      return;
    }
    const TransferMode mode = write ? TransferMode::kWrite : TransferMode::kRead;
    TenantId tenant = kNoTenant;
    uint64_t page_bytes = 0;
    absl::Status s = table_->WithTransferPages(
        h.transfer_id, h.secret, mode, h.layer_index, h.first_page, h.page_count,
        [&](const TransferPages& p) {
          tenant = p.tenant;
          page_bytes = p.pool->page_bytes();
          return absl::OkStatus();
        });
    // The request's size follows from the grant: anything else is not our protocol.
    if (s.ok() && h.payload_bytes != (write ? uint64_t{h.page_count} * page_bytes : 0)) {
      s = absl::InvalidArgumentError(absl::StrFormat(
          "payload_bytes: %d, the request needs %d", h.payload_bytes,
          write ? uint64_t{h.page_count} * page_bytes : 0));
    }
    if (s.ok() && !c.authenticated) s = Authenticate(c, tenant);
    if (!s.ok()) {
      // A refused write's payload would have to be skipped unchecked: close instead.
      Respond(c, s, write || absl::IsInvalidArgument(s) || absl::IsResourceExhausted(s));
      return;
    }
    if (c.authenticated && c.tenant != tenant) {
      Respond(c, absl::PermissionDeniedError("a data connection serves one tenant"), true);
      return;
    }
    c.page_bytes = page_bytes;
    c.pages_done = 0;
    const size_t pieces = std::max<size_t>(1, kCopyBytes / page_bytes);
    c.buf.resize(std::min<uint64_t>(pieces, h.page_count) * page_bytes);
    if (write) {
      c.write_status = absl::OkStatus();
      c.buf_have = 0;
      c.phase = Conn::Phase::kWritePayload;
      return;
    }
    // Read: the first piece is copied before the header goes out, so a request that
    // fails at once gets a clean error.
    absl::Status first = CopyOut(c);
    if (!first.ok()) {
      Respond(c, first, false);
      return;
    }
    DataResponseHeader r;
    r.payload_bytes = uint64_t{h.page_count} * page_bytes;
    c.out.assign(reinterpret_cast<const char*>(&r), sizeof(r));
    c.out_sent = 0;
    c.out_buf_sent = 0;
    c.reading = true;
    c.close_after_send = false;
    c.phase = Conn::Phase::kSend;
  }

  absl::Status Authenticate(Conn& c, TenantId tenant) {
    if (authenticated_ >= options_.max_connections) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the daemon serves %u data connections, its limit", options_.max_connections));
    }
    uint32_t& mine = per_tenant_[tenant];
    if (mine >= options_.max_per_tenant) {
      if (mine == 0) per_tenant_.erase(tenant);
      return absl::ResourceExhaustedError(absl::StrFormat(
          "this tenant holds %u data connections, its limit", options_.max_per_tenant));
    }
    ++mine;
    ++authenticated_;
    --unauthenticated_;
    c.authenticated = true;
    c.tenant = tenant;
    return absl::OkStatus();
  }

  // The next piece of a read's pages into buf (out_buf bytes).
  absl::Status CopyOut(Conn& c) {
    const DataRequestHeader& h = c.hdr;
    const uint32_t n = std::min<uint32_t>(h.page_count - c.pages_done,
                                          static_cast<uint32_t>(c.buf.size() / c.page_bytes));
    absl::Status s = table_->WithTransferPages(
        h.transfer_id, h.secret, TransferMode::kRead, h.layer_index, h.first_page + c.pages_done,
        n, [&](const TransferPages& p) {
          uint8_t* out = c.buf.data();
          for (const PageRun& r : p.runs) {
            const size_t bytes = size_t{r.pages} * c.page_bytes;
            absl::Status copied =
                p.pool->device_ops().CopyToHost(out, p.pool->ChunkData(r.chunk) + r.offset, bytes);
            if (!copied.ok()) return copied;
            out += bytes;
          }
          return absl::OkStatus();
        });
    if (!s.ok()) return s;
    c.pages_done += n;
    c.out_buf = size_t{n} * c.page_bytes;
    c.out_buf_sent = 0;
    return absl::OkStatus();
  }

  // Copies the whole pages in buf[0, buf_have) into the request's pages.
  void CopyIn(Conn& c) {
    const DataRequestHeader& h = c.hdr;
    const uint32_t n = static_cast<uint32_t>(c.buf_have / c.page_bytes);
    if (c.write_status.ok()) {
      c.write_status = table_->WithTransferPages(
          h.transfer_id, h.secret, TransferMode::kWrite, h.layer_index,
          h.first_page + c.pages_done, n, [&](const TransferPages& p) {
            const uint8_t* in = c.buf.data();
            for (const PageRun& r : p.runs) {
              const size_t bytes = size_t{r.pages} * c.page_bytes;
              absl::Status copied = p.pool->device_ops().CopyFromHost(
                  p.pool->ChunkData(r.chunk) + r.offset, in, bytes);
              if (!copied.ok()) return copied;
              in += bytes;
            }
            return absl::OkStatus();
          });
    }
    c.pages_done += n;
    c.buf_have = 0;
  }

  bool ReadPayload(Conn& c, bool* progressed) {
    const uint64_t total = uint64_t{c.hdr.page_count} * c.page_bytes;
    const uint64_t left = total - uint64_t{c.pages_done} * c.page_bytes - c.buf_have;
    const size_t want = static_cast<size_t>(std::min<uint64_t>(left, c.buf.size() - c.buf_have));
    const ssize_t got = Recv(c, c.buf.data() + c.buf_have, want);
    if (got < 0) return false;
    if (got == 0) return true;
    *progressed = true;
    c.buf_have += static_cast<size_t>(got);
    if (c.buf_have == c.buf.size() || static_cast<uint64_t>(got) == left) CopyIn(c);
    if (c.pages_done == c.hdr.page_count) Respond(c, c.write_status, false);
    return true;
  }

  // Drops what arrives until the peer closes (false: close now) or drain_until.
  bool Drain(Conn& c) {
    uint8_t sink[64 << 10];
    for (int i = 0; i < 16; ++i) {
      const ssize_t got = recv(c.fd.get(), sink, sizeof(sink), 0);
      if (got == 0) return false;
      if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    }
    return true;
  }

  bool Send(Conn& c, bool* progressed) {
    for (;;) {
      const char* data;
      size_t n;
      if (c.out_sent < c.out.size()) {
        data = c.out.data() + c.out_sent;
        n = c.out.size() - c.out_sent;
      } else if (c.reading && c.out_buf_sent < c.out_buf) {
        data = reinterpret_cast<const char*>(c.buf.data()) + c.out_buf_sent;
        n = c.out_buf - c.out_buf_sent;
      } else if (c.reading && c.pages_done < c.hdr.page_count) {
        // The header promised these bytes: a failure now can only close the connection.
        if (!CopyOut(c).ok()) return false;
        continue;
      } else {
        if (c.close_after_send) {
          shutdown(c.fd.get(), SHUT_WR);
          c.phase = Conn::Phase::kDrain;
          c.drain_until = absl::Now() + absl::Seconds(1);
          return true;
        }
        c.out.clear();
        c.out_sent = 0;
        c.reading = false;
        c.phase = Conn::Phase::kHeader;
        *progressed = true;
        return true;
      }
      const ssize_t sent = send(c.fd.get(), data, n, MSG_NOSIGNAL);
      if (sent < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      }
      *progressed = true;
      if (c.out_sent < c.out.size()) {
        c.out_sent += static_cast<size_t>(sent);
      } else {
        c.out_buf_sent += static_cast<size_t>(sent);
      }
    }
  }


  const Options options_;
  const SequenceTable* const table_;
  const int listener_, wake_;
  UniqueFd epoll_;
  // Touched by the loop's thread only.
  absl::flat_hash_map<uint64_t, std::unique_ptr<Conn>> conns_;
  absl::flat_hash_map<TenantId, uint32_t> per_tenant_;
  uint64_t serial_ = 0;
  absl::Time listener_paused_until_ = absl::InfinitePast();
  uint32_t authenticated_ = 0, unauthenticated_ = 0;
};

absl::StatusOr<std::unique_ptr<TcpDataServer>> TcpDataServer::Start(const Options& options,
                                                                    const SequenceTable* table) {
  absl::StatusOr<net::TcpListener> listener = net::ListenTcp(options.listen);
  if (!listener.ok()) {
    return absl::Status(listener.status().code(),
                        absl::StrCat("data listen ", listener.status().message()));
  }
  std::unique_ptr<TcpDataServer> server(new TcpDataServer());
  server->port_ = listener->port;
  server->listener_ = std::move(listener->fd);
  server->wake_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!server->wake_.valid()) return Errno("eventfd");
  server->loop_ =
      std::make_unique<Loop>(options, table, server->listener_.get(), server->wake_.get());
  if (absl::Status s = server->loop_->Init(); !s.ok()) return s;
  Loop* loop = server->loop_.get();
  server->thread_ = std::thread([loop] {
    pthread_setname_np(pthread_self(), "kvw-data");
    loop->Run();
  });
  return server;
}

TcpDataServer::~TcpDataServer() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof(one));
    thread_.join();
  }
}


}  // namespace kvwarden
