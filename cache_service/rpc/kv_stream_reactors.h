#pragma once

#include "cache_service/rpc/service_context.h"
#include "common/net/kv_messages.h"
#include "kvwarden/v1/control.grpc.pb.h"

namespace kvwarden {


// Client-streaming WriteKV over raw bytes: applies each message in order; the first
// bad message (one that does not parse included) ends the stream with its status
// (messages before it stay written; writes are idempotent). The response counts the
// messages applied.
grpc::ServerReadReactor<grpc::ByteBuffer>* NewWriteKvReactor(const ServiceContext& ctx,
                                                             grpc::CallbackServerContext* call,
                                                             grpc::ByteBuffer* resp);

// Server-streaming ReadKV: one message per layer and token chunk, all at one epoch.
grpc::ServerWriteReactor<v1::ReadKVResponse>* NewReadKvReactor(const ServiceContext& ctx,
                                                               grpc::CallbackServerContext* call,
                                                               const v1::ReadKVRequest* req);

}  // namespace kvwarden
