#include "cache_service/rpc/call_auth.h"

namespace kvwarden {

absl::StatusOr<Caller> AuthenticateCall(const Authenticator& auth,
                                        const grpc::CallbackServerContext& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  absl::string_view value;
  if (it != md.end()) value = absl::string_view(it->second.data(), it->second.size());
  return auth.Authenticate(value);
}

absl::StatusOr<TenantId> AuthenticateTenant(const Authenticator& auth,
                                            const grpc::CallbackServerContext& ctx) {
  absl::StatusOr<Caller> caller = AuthenticateCall(auth, ctx);
  if (!caller.ok()) return caller.status();
  if (caller->admin) {
    return absl::PermissionDeniedError(
        "the admin token cannot act as a worker: use a tenant token");
  }
  return caller->tenant;
}

}  // namespace kvwarden
