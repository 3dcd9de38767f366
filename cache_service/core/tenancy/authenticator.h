#pragma once

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "cache_service/core/ids.h"

namespace kvwarden {

// Maps a bearer token to a Caller. Tenants are looked up by their token's SHA-256, so a
// fleet-wide tenant (cluster mode) can be known by the digest alone, as etcd stores it;
// the admin and peer tokens are compared in constant time. Thread-safe: fleet-wide
// tenants' tokens change while calls are authenticated.
class Authenticator {
 public:
  // tenant_tokens[i] is the token of tenant id i; `peer_token` the cluster's shared
  // secret for daemon-to-daemon calls (empty: none is accepted).
  Authenticator(std::string admin_token, std::vector<std::string> tenant_tokens,
                std::string peer_token = "");

  // `authorization` is the metadata value ("Bearer <token>"); empty when absent.
  // UNAUTHENTICATED when missing, malformed or unknown.
  absl::StatusOr<Caller> Authenticate(absl::string_view authorization) const;
  // Whether `authorization` carries the peer token (another daemon of the cluster).
  bool IsPeer(absl::string_view authorization) const;
  bool accepts_peers() const { return !peer_token_.empty(); }

  // Sets the token of `tenant` by its 32-byte SHA-256 (replacing any it had).
  // ALREADY_EXISTS, changing nothing, when another tenant, the admin or the peer token
  // has that token.
  absl::Status SetTenantDigest(TenantId tenant, absl::string_view sha256);
  // `tenant`'s token is refused from now on.
  void RemoveTenant(TenantId tenant);

 private:
  const std::string admin_token_;
  const std::string admin_digest_;
  const std::string peer_token_;
  const std::string peer_digest_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, TenantId> by_digest_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<TenantId, std::string> digest_of_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvwarden
