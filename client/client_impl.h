#pragma once
// Client internals shared by the library's .cc files (never installed).

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "channel.h"
#include "grpcpp/grpcpp.h"
#include "kvwarden/client.h"
#include "kvwarden/v1/control.grpc.pb.h"
#include "kvwarden/v1/transfer.grpc.pb.h"

namespace kvwarden {
namespace client {

inline absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

inline Layout FromProto(const v1::KvLayout& l) {
  Layout out;
  out.num_layers = l.num_layers();
  out.num_kv_heads = l.num_kv_heads();
  out.head_dim = l.head_dim();
  out.page_tokens = l.page_tokens();
  switch (l.dtype()) {
    case v1::DTYPE_FP32:
      out.dtype = "fp32";
      out.elem_bytes = 4;
      break;
    case v1::DTYPE_BF16:
      out.dtype = "bf16";
      out.elem_bytes = 2;
      break;
    default:
      out.dtype = "fp16";
      out.elem_bytes = 2;
      break;
  }
  return out;
}

struct Client::Impl {
  Options options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::ControlService::Stub> stub;
  std::unique_ptr<v1::TransferService::Stub> transfer;

  // A context with the token and the per-call deadline.
  std::unique_ptr<grpc::ClientContext> Context() const { return NewContext(options); }
};

}  // namespace client
}  // namespace kvwarden
