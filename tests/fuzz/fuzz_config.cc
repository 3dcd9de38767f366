// libFuzzer: the daemon's text config loader. Any text either loads or is refused with
// one INVALID_ARGUMENT line; nothing crashes, and what loads is within the bounds the
// loader promises.

#include <cstdlib>
#include <string>

#include "cache_service/daemon_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<kvwarden::DaemonSettings> s = kvwarden::ParseDaemonConfig(text, "fuzz.textproto");
  if (!s.ok()) {
    if (s.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    if (s.status().message().find('\n') != absl::string_view::npos) std::abort();  // one line
    return 0;
  }
  if (s->pools.empty() || s->tenants.size() != s->tenant_tokens.size()) std::abort();
  // No tenant parses (cluster mode's fleet-wide tenants); then only cluster mode may start.
  if (s->tenants.empty() &&
      kvwarden::CheckTenantSources(*s).ok() != (s->cluster.enabled() && s->cluster.fleet_tenants)) {
    std::abort();
  }
  for (const kvwarden::PoolSpec& p : s->pools) {
    if (p.layout.num_layers == 0 || p.layout.page_tokens == 0 || p.chunk_pages == 0 ||
        p.num_chunks == 0) {
      std::abort();
    }
  }
  return 0;
}
