#pragma once

#include <cstddef>

namespace kvwarden {

// The most K+V payload one WriteKV or ReadKV message carries, for the daemon and every
// client (the Python client's _MAX_MESSAGE_BYTES is the same): 512 KiB, an eighth of gRPC's
// default 4 MiB receive limit. The daemon holds at most one such message per open stream,
// and TenantLimits caps the streams.
inline constexpr size_t kMaxKvMessageBytes = size_t{512} << 10;

}  // namespace kvwarden
