#pragma once

#include <cstdint>
#include <string>

namespace kvwarden::testing {

// Deterministic K/V bytes for (seed, layer, head, position): a read-back can be checked
// byte for byte without keeping what was written.
inline std::string PatternKv(uint64_t seed, uint32_t layer, uint32_t heads, uint32_t first_pos,
                             uint32_t n, size_t token_bytes, bool is_v) {
  std::string out(size_t{heads} * n * token_bytes, '\0');
  for (uint32_t h = 0; h < heads; ++h) {
    for (uint32_t t = 0; t < n; ++t) {
      uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ (uint64_t{layer} << 40) ^ (uint64_t{h} << 32) ^
                   (first_pos + t) ^ (is_v ? 0x5555ull << 48 : 0);
      for (size_t b = 0; b < token_bytes; ++b) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[(size_t{h} * n + t) * token_bytes + b] = static_cast<char>(x);
      }
    }
  }
  return out;
}

}  // namespace kvwarden::testing
