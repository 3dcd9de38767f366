#pragma once
// The one place a client channel and a call's context are set up (Client, AdminClient):
// TLS from Options, reconnect backoff, message size; the token and the per-call deadline.
// Never installed.

#include <memory>

#include "grpcpp/grpcpp.h"
#include "kvwarden/client.h"

namespace kvwarden {
namespace client {

std::shared_ptr<grpc::Channel> NewChannel(const Options& options);
// A context with the bearer token (none when empty) and the per-call deadline.
std::unique_ptr<grpc::ClientContext> NewContext(const Options& options);

}  // namespace client
}  // namespace kvwarden
