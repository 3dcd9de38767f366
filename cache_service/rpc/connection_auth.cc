#include "cache_service/rpc/connection_auth.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"

namespace kvwarden {
namespace {

namespace gx = grpc::experimental;

class ConnectionAuthInterceptor final : public gx::Interceptor {
 public:
  ConnectionAuthInterceptor(gx::ServerRpcInfo* info, const Authenticator* auth,
                            ConnectionAuthMarks* marks)
      : info_(info), auth_(auth), marks_(marks) {}

  void Intercept(gx::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            gx::InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      const int fd = PeerFd(info_->server_context()->peer());
      if (fd >= 0 && !marks_->Marked(fd)) {
        const auto* md = methods->GetRecvInitialMetadata();
        if (md != nullptr) {
          auto it = md->find("authorization");
          const absl::string_view value =
              it == md->end() ? absl::string_view()
                              : absl::string_view(it->second.data(), it->second.size());
          if (it != md->end() && (auth_->Authenticate(value).ok() || auth_->IsPeer(value))) {
            marks_->Mark(fd);
          }
        }
      }
    }
    methods->Proceed();
  }

 private:
  gx::ServerRpcInfo* const info_;
  const Authenticator* const auth_;
  ConnectionAuthMarks* const marks_;
};

class Factory final : public gx::ServerInterceptorFactoryInterface {
 public:
  Factory(const Authenticator* auth, ConnectionAuthMarks* marks) : auth_(auth), marks_(marks) {}
  gx::Interceptor* CreateServerInterceptor(gx::ServerRpcInfo* info) override {
    return new ConnectionAuthInterceptor(info, auth_, marks_);
  }

 private:
  const Authenticator* const auth_;
  ConnectionAuthMarks* const marks_;
};

}  // namespace

int PeerFd(const std::string& peer) {
  int fd = -1;
  if (!absl::StartsWith(peer, "fd:") || !absl::SimpleAtoi(absl::string_view(peer).substr(3), &fd)) {
    return -1;
  }
  return fd;
}

std::unique_ptr<gx::ServerInterceptorFactoryInterface> NewConnectionAuthInterceptorFactory(
    const Authenticator* auth, ConnectionAuthMarks* marks) {
  return std::make_unique<Factory>(auth, marks);
}

}  // namespace kvwarden
