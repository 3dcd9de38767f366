#include "cache_service/rpc/peer_service.h"

#include "cache_service/rpc/grpc_status.h"

namespace kvwarden {

grpc::ServerUnaryReactor* PeerServiceImpl::AdoptSequence(grpc::CallbackServerContext* call,
                                                         const v1::AdoptSequenceRequest* req,
                                                         v1::AdoptSequenceResponse* resp) {
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  std::string authorization;
  const auto& md = call->client_metadata();
  if (auto it = md.find("authorization"); it != md.end())
    authorization.assign(it->second.data(), it->second.size());
  // Answered on the migrations' thread: the pages come from another daemon.
  migrations_->AdoptIn(authorization, *req,
                       [reactor, resp](absl::StatusOr<v1::AdoptSequenceResponse> r) {
                         if (r.ok()) *resp = *std::move(r);
                         reactor->Finish(ToGrpcStatus(r.status()));
                       });
  return reactor;
}

}  // namespace kvwarden
