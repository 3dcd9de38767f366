#pragma once

// One connection to kvwardend's TCP data path (common/net/data_frames.h): requests name
// a transfer grant and its secret; the daemon checks them and copies the pages. Used by
// the client's DataPlane when transports are "tcp" or UCX cannot reach the daemon (another
// host), and by a daemon reading a migrating sequence's pages from another daemon.
// Blocking I/O with a deadline per call. Not thread-safe (DataPlane serializes).

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/fd/unique_fd.h"
#include "common/net/data_frames.h"

namespace kvwarden::net {

// One layer's pages of a grant: [first_page, first_page + page_count) into or out of
// `buf` (page_count * page_bytes bytes).
struct TcpPageOp {
  uint32_t layer_index = 0;
  uint32_t first_page = 0;
  uint32_t page_count = 0;
  uint8_t* buf = nullptr;
};

class TcpDataChannel {
 public:
  static absl::StatusOr<TcpDataChannel> Connect(const std::string& host, uint16_t port,
                                                absl::Time deadline);
  TcpDataChannel() = default;
  TcpDataChannel(TcpDataChannel&&) = default;
  TcpDataChannel& operator=(TcpDataChannel&&) = default;

  // Sends every op of one grant, then reads their answers (the daemon serves them in
  // order). The first failure is returned; the channel is then broken() unless the
  // daemon answered cleanly.
  absl::Status Move(uint64_t transfer_id, const net::DataSecret& secret, bool write,
                    uint64_t page_bytes, absl::Span<const TcpPageOp> ops, absl::Time deadline);
  bool broken() const { return !fd_.valid(); }

 private:
  absl::Status SendAll(const void* data, size_t n, absl::Time deadline);
  absl::Status RecvAll(void* data, size_t n, absl::Time deadline);
  absl::Status Wait(short events, absl::Time deadline);
  absl::Status Broken(absl::Status s);
  UniqueFd fd_;
};

// "host:port", "[v6]:port", "dns:///host:port" -> host; "" for targets without a host
// (unix sockets).
std::string TargetHost(const std::string& target);

}  // namespace kvwarden::net
