#pragma once

// The admin's view of a running kvwardend for tests: pool stats (pinned and used pages
// are the leak checks), transfers and attachments.

#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvwarden/v1/admin.grpc.pb.h"

namespace kvwarden::testing {

class AdminProbe {
 public:
  explicit AdminProbe(const std::string& target, const std::string& token = "test-admin")
      : token_(token),
        stub_(v1::AdminService::NewStub(
            grpc::CreateChannel(target, grpc::InsecureChannelCredentials()))) {}

  v1::PoolStats Pool(const std::string& pool) {
    v1::GetPoolStatsRequest req;
    req.set_pool(pool);
    v1::PoolStats resp;
    Call([&](grpc::ClientContext* ctx) { return stub_->GetPoolStats(ctx, req, &resp); });
    return resp;
  }
  v1::ListTransfersResponse Transfers() {
    v1::ListTransfersResponse resp;
    Call([&](grpc::ClientContext* ctx) { return stub_->ListTransfers(ctx, {}, &resp); });
    return resp;
  }
  v1::ListAttachmentsResponse Attachments() {
    v1::ListAttachmentsResponse resp;
    Call([&](grpc::ClientContext* ctx) { return stub_->ListAttachments(ctx, {}, &resp); });
    return resp;
  }

 private:
  template <typename Fn>
  void Call(Fn&& fn) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token_);
    const grpc::Status s = fn(&ctx);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  const std::string token_;
  std::unique_ptr<v1::AdminService::Stub> stub_;
};

}  // namespace kvwarden::testing
