#pragma once

#include "cache_service/rpc/service_context.h"
#include "kvwarden/v1/admin.grpc.pb.h"

namespace kvwarden {

// kvwarden.v1.AdminService: operator queries, admin token only. Thread-safe.
class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  explicit AdminServiceImpl(ServiceContext ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* ListPools(grpc::CallbackServerContext* call,
                                      const v1::ListPoolsRequest* req,
                                      v1::ListPoolsResponse* resp) override;
  grpc::ServerUnaryReactor* GetPoolStats(grpc::CallbackServerContext* call,
                                         const v1::GetPoolStatsRequest* req,
                                         v1::PoolStats* resp) override;
  grpc::ServerUnaryReactor* ListTenants(grpc::CallbackServerContext* call,
                                        const v1::ListTenantsRequest* req,
                                        v1::ListTenantsResponse* resp) override;
  grpc::ServerUnaryReactor* ListSequences(grpc::CallbackServerContext* call,
                                          const v1::ListSequencesRequest* req,
                                          v1::ListSequencesResponse* resp) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* call,
                                        const v1::ListWorkersRequest* req,
                                        v1::ListWorkersResponse* resp) override;
  grpc::ServerUnaryReactor* ListTransfers(grpc::CallbackServerContext* call,
                                          const v1::ListTransfersRequest* req,
                                          v1::ListTransfersResponse* resp) override;
  grpc::ServerUnaryReactor* ListAttachments(grpc::CallbackServerContext* call,
                                            const v1::ListAttachmentsRequest* req,
                                            v1::ListAttachmentsResponse* resp) override;
  grpc::ServerUnaryReactor* SetPoolDraining(grpc::CallbackServerContext* call,
                                            const v1::SetPoolDrainingRequest* req, v1::PoolStats* resp) override;
  grpc::ServerUnaryReactor* GetConfig(grpc::CallbackServerContext* call, const v1::GetConfigRequest* req,
                                      v1::GetConfigResponse* resp) override;

 private:
  const ServiceContext ctx_;
};

}  // namespace kvwarden
