#pragma once

#include "cache_service/cluster/migrations.h"
#include "kvwarden/v1/peer.grpc.pb.h"

namespace kvwarden {

// kvwarden.v1.PeerService: other daemons of the cluster, authenticated by the peer
// token (Migrations checks it). Registered only in cluster mode.
class PeerServiceImpl final : public v1::PeerService::CallbackService {
 public:
  explicit PeerServiceImpl(Migrations* migrations) : migrations_(migrations) {}

  grpc::ServerUnaryReactor* AdoptSequence(grpc::CallbackServerContext* call,
                                          const v1::AdoptSequenceRequest* req,
                                          v1::AdoptSequenceResponse* resp) override;

 private:
  Migrations* const migrations_;
};

}  // namespace kvwarden
