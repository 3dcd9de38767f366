#pragma once

#include <cstdint>

namespace kvwarden {

struct ProcessFds {
  uint32_t open = 0;   // entries in /proc/self/fd
  uint32_t limit = 0;  // RLIMIT_NOFILE soft limit
};

// Raises RLIMIT_NOFILE's soft limit to its hard limit (at start: every connection,
// stream and chunk costs an fd, and 1024 is a few hundred idle clients). Returns the
// limit now in force.
uint64_t RaiseFdLimit();

ProcessFds CountProcessFds();

}  // namespace kvwarden
