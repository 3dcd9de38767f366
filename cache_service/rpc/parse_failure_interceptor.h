#pragma once

#include <memory>

#include "grpcpp/support/server_interceptor.h"

namespace kvwarden {

// gRPC's callback API answers a request that does not parse with UNIMPLEMENTED and no
// message. For kvwarden's own methods this interceptor turns that into INVALID_ARGUMENT
// naming the request type; an unknown method stays UNIMPLEMENTED. (Client-streamed
// messages are parsed by their reactors: see raw_messages.h.)
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewParseFailureInterceptorFactory();

}  // namespace kvwarden
