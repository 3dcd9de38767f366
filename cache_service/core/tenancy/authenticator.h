#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cache_service/core/ids.h"

namespace kvwarden {

// Maps a bearer token to a Caller. Immutable after construction (thread-safe).
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

 private:
  const std::string admin_token_;
  const std::vector<std::string> tenant_tokens_;
  const std::string peer_token_;
};

}  // namespace kvwarden
