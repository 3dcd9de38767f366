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

absl::StatusOr<TenantId> OpenTenantStream(const Authenticator& auth, TenantLedger& ledger,
                                          const grpc::CallbackServerContext& ctx) {
  absl::StatusOr<TenantId> tenant = AuthenticateTenant(auth, ctx);
  if (!tenant.ok()) return tenant.status();
  if (absl::Status s = ledger.OpenStream(*tenant); !s.ok()) return s;
  return tenant;
}

}  // namespace kvwarden
