#pragma once

#include <chrono>
#include <functional>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cache_service/core/sequences/parked_calls.h"
#include "cache_service/rpc/grpc_status.h"
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

// For a call answered on another thread (one that waits on etcd or another daemon): the
// completion that thread runs, which copies an OK answer into `resp` and finishes the
// call with the status. The handler returns `reactor` at once.
template <typename Resp>
std::function<void(absl::StatusOr<Resp>)> FinishLater(grpc::ServerUnaryReactor* reactor,
                                                      Resp* resp) {
  return [reactor, resp](absl::StatusOr<Resp> r) {
    if (r.ok()) *resp = *std::move(r);
    reactor->Finish(ToGrpcStatus(r.status()));
  };
}

// The caller's deadline and cancellation as ParkedCalls wants them, `work` and `finish`
// around them. `call` outlives the parked call: gRPC keeps it until the call finishes.
inline ParkedCalls::Call ParkedCall(grpc::CallbackServerContext* call, uint64_t tenant,
                                    std::function<absl::Status()> work,
                                    std::function<void(absl::Status)> finish) {
  ParkedCalls::Call c;
  c.tenant = tenant;
  const auto deadline = call->deadline();
  if (deadline != std::chrono::system_clock::time_point::max())
    c.deadline = absl::FromChrono(deadline);
  c.cancelled = [call] { return call->IsCancelled(); };
  c.attempt = std::move(work);
  c.finish = std::move(finish);
  return c;
}

// FinishWith for work that may have to wait for a transfer lease to end: `fn` runs now
// and, while it answers TransferBusyError, again on ParkedCalls' thread, parked under
// `tenant`'s share. `fn` outlives the handler: capture by value only (call, request,
// response pointers, the tenant).
template <typename Fn>
grpc::ServerUnaryReactor* FinishParkable(grpc::CallbackServerContext* call, ParkedCalls* parked,
                                         uint64_t tenant, Fn fn) {
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  parked->Run(ParkedCall(call, tenant, std::move(fn),
                         [reactor](absl::Status s) { reactor->Finish(ToGrpcStatus(s)); }));
  return reactor;
}

}  // namespace kvwarden
