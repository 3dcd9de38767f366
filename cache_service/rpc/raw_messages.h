#pragma once

// WriteKV and StreamStats read raw bytes and parse them here: gRPC's typed callback API
// reports a message that does not parse exactly like the end of the stream (and a
// unary request that does not parse as UNIMPLEMENTED with no message), so a garbage
// message in the middle of a stream used to end it OK with the rest silently dropped.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"
#include "grpcpp/impl/codegen/proto_utils.h"

namespace kvwarden {

// Parses message `index` (1-based) of a stream; INVALID_ARGUMENT naming the message
// and its type when the bytes are not one. Consumes `buf`.
template <typename Msg>
absl::Status ParseStreamMessage(grpc::ByteBuffer* buf, uint64_t index, Msg* out) {
  grpc::Status s = grpc::SerializationTraits<Msg>::Deserialize(buf, out);
  if (s.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("message ", index, " of the stream does not parse as ",
                                                 Msg::descriptor()->full_name(), "; the stream stops there"));
}

// Replaces `out` (gRPC's writer asserts that the buffer it fills is empty).
template <typename Msg>
void SerializeMessage(const Msg& msg, grpc::ByteBuffer* out) {
  out->Clear();
  bool own = false;
  (void)grpc::SerializationTraits<Msg>::Serialize(msg, out, &own);
}

}  // namespace kvwarden
