#pragma once

#include "cache_service/grpc_status.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"

namespace kvwarden {

// Runs `fn` (returning absl::Status) and finishes the unary callback-API call with its
// status: the services' handlers are each one FinishWith around their logic.
template <typename Fn>
grpc::ServerUnaryReactor* FinishWith(grpc::CallbackServerContext* call, Fn&& fn) {
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  reactor->Finish(ToGrpcStatus(fn()));
  return reactor;
}

}  // namespace kvwarden
