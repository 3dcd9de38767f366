#include "kvwarden/admin_client.h"

#include "channel.h"
#include "client_impl.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kvwarden/v1/admin.grpc.pb.h"
#include "kvwarden/v1/control.grpc.pb.h"

namespace kvwarden {
namespace client {

struct AdminClient::Impl {
  Options options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::AdminService::Stub> admin;
  std::unique_ptr<v1::ControlService::Stub> control;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;

  // One unary call with the token and deadline: its answer, or the daemon's status.
  template <typename Stub, typename Req, typename Resp>
  absl::StatusOr<Resp> Call(Stub& stub,
                            grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                            const Req& req) const {
    std::unique_ptr<grpc::ClientContext> ctx = NewContext(options);
    Resp resp;
    if (grpc::Status s = (stub.*method)(ctx.get(), req, &resp); !s.ok()) return FromGrpc(s);
    return resp;
  }
};

AdminClient::AdminClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AdminClient::~AdminClient() = default;

absl::StatusOr<std::unique_ptr<AdminClient>> AdminClient::Connect(const Options& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("target: is required");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->channel = NewChannel(options);
  impl->admin = v1::AdminService::NewStub(impl->channel);
  impl->control = v1::ControlService::NewStub(impl->channel);
  impl->health = grpc::health::v1::Health::NewStub(impl->channel);
  return std::unique_ptr<AdminClient>(new AdminClient(std::move(impl)));
}

absl::StatusOr<int> AdminClient::Health(const std::string& service) {
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  absl::StatusOr<grpc::health::v1::HealthCheckResponse> resp =
      impl_->Call(*impl_->health, &grpc::health::v1::Health::Stub::Check, req);
  if (!resp.ok()) return resp.status();
  return static_cast<int>(resp->status());
}

absl::StatusOr<v1::PingResponse> AdminClient::Ping() {
  return impl_->Call(*impl_->control, &v1::ControlService::Stub::Ping, v1::PingRequest());
}

absl::StatusOr<v1::ListPoolsResponse> AdminClient::ListPools() {
  return impl_->Call(*impl_->admin, &v1::AdminService::Stub::ListPools, v1::ListPoolsRequest());
}

absl::StatusOr<v1::ListTenantsResponse> AdminClient::ListTenants() {
  return impl_->Call(*impl_->admin, &v1::AdminService::Stub::ListTenants, v1::ListTenantsRequest());
}

absl::StatusOr<v1::ListWorkersResponse> AdminClient::ListWorkers() {
  return impl_->Call(*impl_->admin, &v1::AdminService::Stub::ListWorkers, v1::ListWorkersRequest());
}

absl::StatusOr<v1::ListSequencesResponse> AdminClient::ListSequences(
    const v1::ListSequencesRequest& request) {
  return impl_->Call(*impl_->admin, &v1::AdminService::Stub::ListSequences, request);
}

absl::StatusOr<v1::ListTransfersResponse> AdminClient::ListTransfers() {
  return impl_->Call(*impl_->admin, &v1::AdminService::Stub::ListTransfers,
                     v1::ListTransfersRequest());
}

absl::StatusOr<v1::ListAttachmentsResponse> AdminClient::ListAttachments() {
  return impl_->Call(*impl_->admin, &v1::AdminService::Stub::ListAttachments,
                     v1::ListAttachmentsRequest());
}

absl::StatusOr<v1::PoolStats> AdminClient::SetPoolDraining(const std::string& pool, bool draining) {
  v1::SetPoolDrainingRequest req;
  req.set_pool(pool);
  req.set_draining(draining);
  return impl_->Call(*impl_->admin, &v1::AdminService::Stub::SetPoolDraining, req);
}

absl::StatusOr<v1::MigrateSequenceResponse> AdminClient::MigrateSequence(
    const v1::MigrateSequenceRequest& request, absl::Duration timeout) {
  std::unique_ptr<grpc::ClientContext> ctx = NewContext(impl_->options);
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::MigrateSequenceResponse resp;
  if (grpc::Status s = impl_->control->MigrateSequence(ctx.get(), request, &resp); !s.ok())
    return FromGrpc(s);
  return resp;
}

absl::StatusOr<v1::GetConfigResponse> AdminClient::GetConfig() {
  return impl_->Call(*impl_->admin, &v1::AdminService::Stub::GetConfig, v1::GetConfigRequest());
}

absl::StatusOr<v1::SequenceInfo> AdminClient::DescribeSequence(uint64_t sequence_id) {
  v1::DescribeSequenceRequest req;
  req.set_sequence_id(sequence_id);
  return impl_->Call(*impl_->control, &v1::ControlService::Stub::DescribeSequence, req);
}

}  // namespace client
}  // namespace kvwarden
