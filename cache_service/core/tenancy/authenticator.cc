#include "cache_service/core/tenancy/authenticator.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"

namespace kvwarden {
namespace {

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
      tenant_tokens_(std::move(tenant_tokens)),
      peer_token_(std::move(peer_token)) {}

bool Authenticator::IsPeer(absl::string_view authorization) const {
  constexpr absl::string_view kBearer = "Bearer ";
  return !peer_token_.empty() && absl::StartsWith(authorization, kBearer) &&
         ConstantTimeEquals(authorization.substr(kBearer.size()), peer_token_);
}

absl::StatusOr<Caller> Authenticator::Authenticate(absl::string_view authorization) const {
  if (authorization.empty()) {
    return absl::UnauthenticatedError("missing 'authorization: Bearer <token>' metadata");
  }
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(authorization, kBearer)) {
    return absl::UnauthenticatedError("authorization metadata must be 'Bearer <token>'");
  }
  const absl::string_view token = authorization.substr(kBearer.size());
  bool admin = ConstantTimeEquals(token, admin_token_);
  TenantId tenant = kNoTenant;
  for (TenantId i = 0; i < tenant_tokens_.size(); ++i) {
    if (ConstantTimeEquals(token, tenant_tokens_[i])) tenant = i;
  }
  if (admin) return Caller::Admin();
  if (tenant != kNoTenant) return Caller::Tenant(tenant);
  return absl::UnauthenticatedError("unknown token");
}

}  // namespace kvwarden
