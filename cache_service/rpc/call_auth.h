#pragma once

#include "absl/status/statusor.h"
#include "cache_service/rpc/authenticator.h"
#include "grpcpp/server_context.h"

namespace kvwarden {

// Reads `authorization` metadata of a call and resolves the caller.
absl::StatusOr<Caller> AuthenticateCall(const Authenticator& auth,
                                        const grpc::CallbackServerContext& ctx);
// As above, and refuses the admin token: worker calls act as a tenant.
absl::StatusOr<TenantId> AuthenticateTenant(const Authenticator& auth,
                                            const grpc::CallbackServerContext& ctx);

}  // namespace kvwarden
