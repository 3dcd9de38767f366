#include "cache_service/metrics/rpc_metrics_interceptor.h"

#include <chrono>
#include <string>

namespace kvwarden {
namespace {

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(DaemonMetrics* metrics, const char* method)
      : metrics_(metrics),
        method_(method ? method : ""),
        start_(std::chrono::steady_clock::now()) {}
  ~RpcMetricsInterceptor() override {
    if (!observed_) Observe(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      Observe(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Observe(grpc::StatusCode code) {
    observed_ = true;
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start_;
    metrics_->ObserveRpc(method_, static_cast<int>(code), took.count());
  }

  DaemonMetrics* const metrics_;
  const std::string method_;
  const std::chrono::steady_clock::time_point start_;
  bool observed_ = false;
};

class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(DaemonMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcMetricsInterceptor(metrics_, info->method());
  }

 private:
  DaemonMetrics* const metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewRpcMetricsInterceptorFactory(DaemonMetrics* metrics) {
  return std::make_unique<Factory>(metrics);
}

}  // namespace kvwarden
