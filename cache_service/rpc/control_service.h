#pragma once

#include "cache_service/rpc/service_context.h"
#include "kvwarden/v1/control.grpc.pb.h"

namespace kvwarden {

// kvwarden.v1.ControlService on gRPC's callback API. Stateless beyond the injected
// parts (thread-safe); each KV stream gets a reactor with its own state.
// ControlService::CallbackService, except that WriteKV and StreamStats take raw bytes
// (see raw_messages.h). Spelled out: a raw bidi method cannot stack on a typed one.
using ControlServiceBase = v1::ControlService::WithCallbackMethod_Ping<
    v1::ControlService::WithCallbackMethod_RegisterWorker<
        v1::ControlService::WithCallbackMethod_KeepAlive<
            v1::ControlService::WithCallbackMethod_ReleaseWorker<
                v1::ControlService::WithCallbackMethod_CreateSequence<
                    v1::ControlService::WithCallbackMethod_ForkSequence<
                        v1::ControlService::WithCallbackMethod_ReleaseSequence<
                            v1::ControlService::WithCallbackMethod_DescribeSequence<
                                v1::ControlService::WithCallbackMethod_MigrateSequence<
                                    v1::ControlService::WithCallbackMethod_PublishHandle<
                                        v1::ControlService::WithCallbackMethod_ResolveHandle<
                                            v1::ControlService::WithCallbackMethod_ListNodes<
                                                v1::ControlService::WithCallbackMethod_ReserveSlots<
                                                    v1::ControlService::WithRawCallbackMethod_WriteKV<
                                                        v1::ControlService::
                                                            WithCallbackMethod_ReadKV<
                                                                v1::ControlService::
                                                                    WithRawCallbackMethod_StreamStats<
                                                                        v1::ControlService::
                                                                            Service>>>>>>>>>>>>>>>>;

class ControlServiceImpl final : public ControlServiceBase {
 public:
  explicit ControlServiceImpl(ServiceContext ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* call, const v1::PingRequest* req,
                                 v1::PingResponse* resp) override;
  grpc::ServerUnaryReactor* RegisterWorker(grpc::CallbackServerContext* call,
                                           const v1::RegisterWorkerRequest* req,
                                           v1::RegisterWorkerResponse* resp) override;
  grpc::ServerUnaryReactor* KeepAlive(grpc::CallbackServerContext* call,
                                      const v1::KeepAliveRequest* req,
                                      v1::KeepAliveResponse* resp) override;
  grpc::ServerUnaryReactor* ReleaseWorker(grpc::CallbackServerContext* call,
                                          const v1::ReleaseWorkerRequest* req,
                                          v1::ReleaseWorkerResponse* resp) override;
  grpc::ServerUnaryReactor* CreateSequence(grpc::CallbackServerContext* call,
                                           const v1::CreateSequenceRequest* req,
                                           v1::CreateSequenceResponse* resp) override;
  grpc::ServerUnaryReactor* ForkSequence(grpc::CallbackServerContext* call,
                                         const v1::ForkSequenceRequest* req,
                                         v1::ForkSequenceResponse* resp) override;
  grpc::ServerUnaryReactor* ReleaseSequence(grpc::CallbackServerContext* call,
                                            const v1::ReleaseSequenceRequest* req,
                                            v1::ReleaseSequenceResponse* resp) override;
  grpc::ServerUnaryReactor* DescribeSequence(grpc::CallbackServerContext* call,
                                             const v1::DescribeSequenceRequest* req,
                                             v1::SequenceInfo* resp) override;
  grpc::ServerUnaryReactor* MigrateSequence(grpc::CallbackServerContext* call,
                                            const v1::MigrateSequenceRequest* req,
                                            v1::MigrateSequenceResponse* resp) override;
  grpc::ServerUnaryReactor* PublishHandle(grpc::CallbackServerContext* call,
                                          const v1::PublishHandleRequest* req,
                                          v1::HandleInfo* resp) override;
  grpc::ServerUnaryReactor* ResolveHandle(grpc::CallbackServerContext* call,
                                          const v1::ResolveHandleRequest* req,
                                          v1::HandleInfo* resp) override;
  grpc::ServerUnaryReactor* ListNodes(grpc::CallbackServerContext* call,
                                      const v1::ListNodesRequest* req,
                                      v1::ListNodesResponse* resp) override;
  grpc::ServerUnaryReactor* ReserveSlots(grpc::CallbackServerContext* call,
                                         const v1::ReserveSlotsRequest* req,
                                         v1::ReserveSlotsResponse* resp) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* WriteKV(grpc::CallbackServerContext* call,
                                                     grpc::ByteBuffer* resp) override;
  grpc::ServerWriteReactor<v1::ReadKVResponse>* ReadKV(grpc::CallbackServerContext* call,
                                                       const v1::ReadKVRequest* req) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StreamStats(
      grpc::CallbackServerContext* call) override;

 private:
  const ServiceContext ctx_;
};

}  // namespace kvwarden
