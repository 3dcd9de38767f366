#pragma once

#include "cache_service/rpc/service_context.h"
#include "kvwarden/v1/transfer.grpc.pb.h"

namespace kvwarden {

// kvwarden.v1.TransferService: where a tenant's pages are (UCX worker address, remote
// keys, attach socket) and transfer leases. Stateless beyond the injected parts.
class TransferServiceImpl final : public v1::TransferService::CallbackService {
 public:
  explicit TransferServiceImpl(ServiceContext ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* GetDataPlane(grpc::CallbackServerContext* call,
                                         const v1::GetDataPlaneRequest* req,
                                         v1::DataPlaneInfo* resp) override;
  grpc::ServerUnaryReactor* BeginTransfer(grpc::CallbackServerContext* call,
                                          const v1::BeginTransferRequest* req,
                                          v1::TransferGrant* resp) override;
  grpc::ServerUnaryReactor* EndTransfer(grpc::CallbackServerContext* call,
                                        const v1::EndTransferRequest* req,
                                        v1::EndTransferResponse* resp) override;

 private:
  const ServiceContext ctx_;
};

}  // namespace kvwarden
