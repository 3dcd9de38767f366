#include "cache_service/core/tenancy/authenticator.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/codec/sha256.h"

namespace kvwarden {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

// Compares without an early exit so response time does not reveal a token's prefix.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

Authenticator::Authenticator(std::string admin_token, std::vector<std::string> tenant_tokens,
                             std::string peer_token)
    : admin_token_(std::move(admin_token)),
      admin_digest_(Sha256(admin_token_)),
      peer_token_(std::move(peer_token)),
      peer_digest_(peer_token_.empty() ? std::string() : Sha256(peer_token_)) {
  absl::MutexLock lock(&mu_);
  for (TenantId i = 0; i < tenant_tokens.size(); ++i) {
    std::string digest = Sha256(tenant_tokens[i]);
    by_digest_[digest] = i;
    digest_of_[i] = std::move(digest);
  }
}

bool Authenticator::IsPeer(absl::string_view authorization) const {
  return !peer_token_.empty() && absl::StartsWith(authorization, kBearer) &&
         ConstantTimeEquals(authorization.substr(kBearer.size()), peer_token_);
}

absl::StatusOr<Caller> Authenticator::Authenticate(absl::string_view authorization) const {
  if (authorization.empty()) {
    return absl::UnauthenticatedError("missing 'authorization: Bearer <token>' metadata");
  }
  if (!absl::StartsWith(authorization, kBearer)) {
    return absl::UnauthenticatedError("authorization metadata must be 'Bearer <token>'");
  }
  const absl::string_view token = authorization.substr(kBearer.size());
  if (ConstantTimeEquals(token, admin_token_)) return Caller::Admin();
  // A lookup by digest reveals through its timing at most something about the digest,
  // which says nothing usable about the token.
  const std::string digest = Sha256(token);
  absl::MutexLock lock(&mu_);
  if (auto it = by_digest_.find(digest); it != by_digest_.end()) return Caller::Tenant(it->second);
  return absl::UnauthenticatedError("unknown token");
}

absl::Status Authenticator::SetTenantDigest(TenantId tenant, absl::string_view sha256) {
  const std::string digest(sha256);
  if (digest == admin_digest_ || (!peer_digest_.empty() && digest == peer_digest_)) {
    return absl::AlreadyExistsError("the token is the admin or the cluster's peer token");
  }
  absl::MutexLock lock(&mu_);
  if (auto it = by_digest_.find(digest); it != by_digest_.end() && it->second != tenant) {
    return absl::AlreadyExistsError("another tenant has the same token");
  }
  if (auto old = digest_of_.find(tenant); old != digest_of_.end()) by_digest_.erase(old->second);
  by_digest_[digest] = tenant;
  digest_of_[tenant] = digest;
  return absl::OkStatus();
}

void Authenticator::RemoveTenant(TenantId tenant) {
  absl::MutexLock lock(&mu_);
  auto it = digest_of_.find(tenant);
  if (it == digest_of_.end()) return;
  by_digest_.erase(it->second);
  digest_of_.erase(it);
}

}  // namespace kvwarden
