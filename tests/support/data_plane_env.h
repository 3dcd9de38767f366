#pragma once

// Shared bits of the data-plane tests: a daemon config with page sizes 1, 3 and 16
// tokens, UCX pinned to loopback, random page buffers and checksums.

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace kvwarden::testing {

//  pools "pt1", "pt3", "pt16": 3 layers x 2 heads x 32 dim fp16, 1/3/16 tokens per page
//  (256 B / 768 B / 4 KiB pages), chunks of 64 KiB (so a sequence spans chunks);
//  alpha: 8192 pages; beta: 2048 pages; leases reaped every 20 ms.
inline constexpr const char* kDataPlaneConfig = R"pb(
  admin_token: "test-admin"
  pools {
    name: "pt1"
    layout { num_layers: 3 num_kv_heads: 2 head_dim: 32 dtype: DTYPE_FP16 page_tokens: 1 }
    capacity_bytes: 8388608
    chunk_bytes: 65536
  }
  pools {
    name: "pt3"
    layout { num_layers: 3 num_kv_heads: 2 head_dim: 32 dtype: DTYPE_FP16 page_tokens: 3 }
    capacity_bytes: 8388608
    chunk_bytes: 65536
  }
  pools {
    name: "pt16"
    layout { num_layers: 3 num_kv_heads: 2 head_dim: 32 dtype: DTYPE_FP16 page_tokens: 16 }
    capacity_bytes: 8388608
    chunk_bytes: 65536
  }
  tenants { name: "alpha" token: "alpha-token" quota_pages: 8192 weight: 2 }
  tenants { name: "beta" token: "beta-token" quota_pages: 2048 weight: 1 }
  leases { default_ttl_ms: 5000 min_ttl_ms: 100 max_ttl_ms: 60000 reap_interval_ms: 20 }
)pb";

// UCX on loopback only (the daemon inherits the environment from the test).
inline void UseLoopbackUcx() { setenv("UCX_NET_DEVICES", "lo", 1); }

inline std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t x = rng();
    for (size_t b = 0; b < 8 && i + b < n; ++b) out[i + b] = static_cast<uint8_t>(x >> (8 * b));
  }
  return out;
}

// FNV-1a: enough to tell two buffers apart in a failure message.
inline uint64_t Checksum(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace kvwarden::testing
