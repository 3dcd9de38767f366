#pragma once

#include <sys/random.h>

#include <cstdint>

namespace kvwarden {

// A fresh id for a sequence, lease, transfer or attachment: random, so that ids are
// unguessable and a tenant cannot count other tenants' activity from the gaps between
// its own (a global counter leaked that). 53 bits: exact as a JSON number (kvwctl
// --json, Python clients). Never 0, which the protos use for "none". Callers keep ids
// unique by drawing again on the (2^-53-rare) collision.
inline uint64_t RandomId() {
  constexpr uint64_t kMask = (uint64_t{1} << 53) - 1;
  uint64_t v = 0;
  while ((v & kMask) == 0) {
    // getrandom() on at most 256 bytes from an initialized pool never returns short.
    if (getrandom(&v, sizeof(v), 0) != static_cast<ssize_t>(sizeof(v))) v = 0;
  }
  return v & kMask;
}

}  // namespace kvwarden
