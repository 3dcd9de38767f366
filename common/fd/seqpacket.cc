#include "common/fd/seqpacket.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvwarden {
namespace {

absl::Status Errno(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

absl::Status SendOne(int sock, absl::string_view payload, absl::Span<const int> fds) {
  iovec iov{const_cast<char*>(payload.data()), payload.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kFdsPerRecord), 0);
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    if (sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0) return absl::OkStatus();
    if (errno != EINTR) return Errno("sendmsg");
  }
}

absl::Status WaitReadable(int sock, absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return absl::OkStatus();
  pollfd p{sock, POLLIN, 0};
  const int ms = static_cast<int>(absl::ToInt64Milliseconds(timeout));
  for (;;) {
    const int n = poll(&p, 1, ms);
    if (n > 0) return absl::OkStatus();
    if (n == 0) return absl::DeadlineExceededError("attach socket: no answer in time");
    if (errno != EINTR) return Errno("poll");
  }
}

}  // namespace

absl::Status SendRecord(int sock, absl::string_view payload, absl::Span<const int> fds) {
  if (payload.empty() || payload.size() > kMaxRecordBytes) {
    return absl::InvalidArgumentError(absl::StrCat("record of ", payload.size(), " bytes"));
  }
  const size_t first = std::min(fds.size(), kFdsPerRecord);
  if (absl::Status s = SendOne(sock, payload, fds.subspan(0, first)); !s.ok()) return s;
  for (size_t at = first; at < fds.size(); at += kFdsPerRecord) {
    if (absl::Status s = SendOne(sock, "+", fds.subspan(at, kFdsPerRecord)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RecvRecord(int sock, std::vector<UniqueFd>* fds,
                                       absl::Duration timeout) {
  if (absl::Status s = WaitReadable(sock, timeout); !s.ok()) return s;
  std::string buf(kMaxRecordBytes, '\0');
  iovec iov{buf.data(), buf.size()};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kFdsPerRecord), 0);
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Errno("recvmsg");
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds->emplace_back(fd);
    }
  }
  if (n == 0) return absl::UnavailableError("attach socket: peer closed");
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    return absl::InvalidArgumentError("attach socket: record or descriptors truncated");
  }
  buf.resize(static_cast<size_t>(n));
  return buf;
}

absl::Status RecvFds(int sock, size_t count, std::vector<UniqueFd>* fds, absl::Duration timeout) {
  while (fds->size() < count) {
    const size_t before = fds->size();
    absl::StatusOr<std::string> r = RecvRecord(sock, fds, timeout);
    if (!r.ok()) return r.status();
    if (fds->size() == before) {
      return absl::InvalidArgumentError("attach socket: expected descriptors, got a plain record");
    }
  }
  return absl::OkStatus();
}

}  // namespace kvwarden
