#pragma once

// Records with file descriptors over a SOCK_SEQPACKET Unix socket (the attach socket).
// A record keeps its boundaries, so no length framing is needed. SCM_RIGHTS carries at
// most kFdsPerRecord descriptors per record; more ride on continuation records of one
// byte that the receiver collects with RecvFds once it knows how many to expect.

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/fd/unique_fd.h"

namespace kvwarden {

inline constexpr size_t kFdsPerRecord = 200;  // below the kernel's SCM_MAX_FD (253)
inline constexpr size_t kMaxRecordBytes = 256 * 1024;

absl::Status SendRecord(int sock, absl::string_view payload, absl::Span<const int> fds = {});
// One record; fds that came with it are appended to `fds`. An orderly close by the peer
// is UNAVAILABLE "peer closed". Waits at most `timeout` for the record.
absl::StatusOr<std::string> RecvRecord(int sock, std::vector<UniqueFd>* fds,
                                       absl::Duration timeout = absl::InfiniteDuration());
// Continuation records until `fds` holds `count` descriptors.
absl::Status RecvFds(int sock, size_t count, std::vector<UniqueFd>* fds,
                     absl::Duration timeout = absl::Seconds(10));

}  // namespace kvwarden
