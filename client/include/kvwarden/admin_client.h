#pragma once

// The operator's side of kvwardend: AdminService, health and the sequence view an admin
// token may ask for. What kvwctl shows; its answers are the proto messages themselves
// (their fields are the operator's tables). Connection, TLS, token and deadline come from
// the same Options as Client, set up by the same code (channel.h).
//
// Thread-safe: calls may come from several threads.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kvwarden/client.h"
#include "kvwarden/v1/admin.pb.h"
#include "kvwarden/v1/control.pb.h"

namespace grpc::health::v1 {
class HealthCheckResponse;
}  // namespace grpc::health::v1

namespace kvwarden {
namespace client {

class AdminClient {
 public:
  // Does not block: the connection is made on the first call. An empty token sends none
  // (health needs none).
  static absl::StatusOr<std::unique_ptr<AdminClient>> Connect(const Options& options);
  ~AdminClient();
  AdminClient(const AdminClient&) = delete;
  AdminClient& operator=(const AdminClient&) = delete;

  // grpc.health.v1 Check of `service` ("" the daemon's readiness, "kvwarden.liveness"):
  // the serving status (grpc::health::v1::HealthCheckResponse::ServingStatus).
  absl::StatusOr<int> Health(const std::string& service = "");
  absl::StatusOr<v1::PingResponse> Ping();

  absl::StatusOr<v1::ListPoolsResponse> ListPools();
  absl::StatusOr<v1::ListTenantsResponse> ListTenants();
  absl::StatusOr<v1::ListWorkersResponse> ListWorkers();
  // One page; follow next_page_token for the rest.
  absl::StatusOr<v1::ListSequencesResponse> ListSequences(const v1::ListSequencesRequest& request);
  absl::StatusOr<v1::ListTransfersResponse> ListTransfers();
  absl::StatusOr<v1::ListAttachmentsResponse> ListAttachments();
  absl::StatusOr<v1::PoolStats> SetPoolDraining(const std::string& pool, bool draining);
  absl::StatusOr<v1::GetConfigResponse> GetConfig();
  absl::StatusOr<v1::SequenceInfo> DescribeSequence(uint64_t sequence_id);
  // Moves any tenant's sequence to another node of the cluster (Client::MigrateSequence,
  // with the admin token): what an operator emptying a node does. `timeout` bounds the
  // whole migration.
  absl::StatusOr<v1::MigrateSequenceResponse> MigrateSequence(
      const v1::MigrateSequenceRequest& request, absl::Duration timeout);

 private:
  struct Impl;
  explicit AdminClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace client
}  // namespace kvwarden
