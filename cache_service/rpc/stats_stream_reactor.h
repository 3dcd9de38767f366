#pragma once

#include "cache_service/rpc/service_context.h"
#include "kvwarden/v1/control.grpc.pb.h"

namespace kvwarden {

// Bidirectional StreamStats: reads one StatsMessage, applies it to its sequence, writes
// one RetentionUpdate, reads the next. One reactor (and its state) per stream; a bad
// message ends the stream with its status; a cancelled stream leaves nothing behind.
// Raw bytes both ways: a message that does not parse ends the stream INVALID_ARGUMENT.
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewStatsStreamReactor(
    const ServiceContext& ctx, grpc::CallbackServerContext* call);

}  // namespace kvwarden
