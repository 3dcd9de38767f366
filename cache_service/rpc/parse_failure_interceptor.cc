#include "cache_service/rpc/parse_failure_interceptor.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/descriptor.h"

namespace kvwarden {
namespace {

namespace gx = grpc::experimental;

class ParseFailureInterceptor final : public gx::Interceptor {
 public:
  explicit ParseFailureInterceptor(std::string request_type) : request_type_(std::move(request_type)) {}

  void Intercept(gx::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(gx::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status s = methods->GetSendStatus();
      // Our handlers never answer UNIMPLEMENTED: with no message it is gRPC's parse failure.
      if (s.error_code() == grpc::StatusCode::UNIMPLEMENTED && s.error_message().empty()) {
        methods->ModifySendStatus(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT, absl::StrCat("the request does not parse as ", request_type_)));
      }
    }
    methods->Proceed();
  }

 private:
  const std::string request_type_;
};

class Factory final : public gx::ServerInterceptorFactoryInterface {
 public:
  gx::Interceptor* CreateServerInterceptor(gx::ServerRpcInfo* info) override {
    // "/kvwarden.v1.ControlService/CreateSequence" -> "kvwarden.v1.ControlService.CreateSequence"
    const std::string path = info->method() == nullptr ? "" : info->method();
    if (!absl::StartsWith(path, "/kvwarden.")) return nullptr;
    const google::protobuf::MethodDescriptor* method =
        google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
            absl::StrReplaceAll(path.substr(1), {{"/", "."}}));
    if (method == nullptr) return nullptr;  // unknown method: UNIMPLEMENTED is right
    return new ParseFailureInterceptor(method->input_type()->full_name());
  }
};

}  // namespace

std::unique_ptr<gx::ServerInterceptorFactoryInterface> NewParseFailureInterceptorFactory() {
  return std::make_unique<Factory>();
}

}  // namespace kvwarden
