#pragma once

#include "absl/status/statusor.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "cache_service/core/tenancy/authenticator.h"
#include "grpcpp/server_context.h"

namespace kvwarden {

// Reads `authorization` metadata of a call and resolves the caller.
absl::StatusOr<Caller> AuthenticateCall(const Authenticator& auth,
                                        const grpc::CallbackServerContext& ctx);
// As above, and refuses the admin token: worker calls act as a tenant.
absl::StatusOr<TenantId> AuthenticateTenant(const Authenticator& auth,
                                            const grpc::CallbackServerContext& ctx);
// A stream's start (WriteKV, ReadKV, StreamStats): the tenant, counted against its
// max_open_streams. The caller ends it with ledger.CloseStream(tenant).
absl::StatusOr<TenantId> OpenTenantStream(const Authenticator& auth, TenantLedger& ledger,
                                          const grpc::CallbackServerContext& ctx);

}  // namespace kvwarden
