#pragma once

namespace kvwarden::testing {

// The daemon config integration tests run with.
//  pool "main": 4 layers x 2 heads x 16 dim fp16, 4 tokens/page -> 512-byte pages
//  pool "big":  2 layers x 8 heads x 128 dim fp16, 16 tokens/page -> 64 KiB pages
//  alpha: 4096 pages; beta: 64 pages; leases 100 ms .. 60 s, reaped every 20 ms.
inline constexpr const char* kTestConfig = R"pb(
  admin_token: "test-admin"
  pools {
    name: "main"
    layout { num_layers: 4 num_kv_heads: 2 head_dim: 16 dtype: DTYPE_FP16 page_tokens: 4 }
    capacity_pages: 8192
    chunk_bytes: 32768
  }
  pools {
    name: "big"
    layout { num_layers: 2 num_kv_heads: 8 head_dim: 128 dtype: DTYPE_FP16 page_tokens: 16 }
    capacity_bytes: 67108864
    chunk_bytes: 1048576
  }
  tenants { name: "alpha" token: "alpha-token" quota_pages: 4096 weight: 2 }
  tenants { name: "beta" token: "beta-token" quota_pages: 64 weight: 1 }
  leases { default_ttl_ms: 5000 min_ttl_ms: 100 max_ttl_ms: 60000 reap_interval_ms: 20 }
)pb";

inline constexpr const char* kAdminToken = "test-admin";
inline constexpr const char* kAlphaToken = "alpha-token";
inline constexpr const char* kBetaToken = "beta-token";

}  // namespace kvwarden::testing
