#include "cache_service/rpc/peer_service.h"

#include "cache_service/rpc/unary_call.h"

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
  migrations_->AdoptIn(authorization, *req, FinishLater(reactor, resp));
  return reactor;
}

}  // namespace kvwarden
