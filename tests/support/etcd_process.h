#pragma once

// A real etcd member (Debian's etcd-server, /usr/bin/etcd) for integration tests: on
// free loopback ports, its data in a temp folder, stopped by its pid.

#include <stdlib.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/support/process.h"

namespace kvwarden::testing {

// A test that includes this forks etcd and kvwardend while its own gRPC clients live;
// gRPC's fork handlers (on by default) then leave its new connections hanging for
// seconds. The children exec at once and need none of them: off, before main.
inline const bool kNoGrpcForkHandlers = [] {
  return setenv("GRPC_ENABLE_FORK_SUPPORT", "false", 1) == 0;
}();

class EtcdProcess {
 public:
  // Starts one member and returns once it has elected itself and takes writes (20 s).
  // `also_on`: another local address its client API listens on too (a bridge that
  // network namespaces reach), on the same port.
  static absl::StatusOr<std::unique_ptr<EtcdProcess>> Start(const std::string& also_on = "");
  // SIGTERM, then SIGKILL after 5 s.
  ~EtcdProcess();

  // SIGTERM and wait: etcd is gone until Restart.
  void Stop();
  // Starts it again on the same ports; `wipe`: with an empty data folder, as if the
  // cluster had lost everything (every lease and key).
  absl::Status Restart(bool wipe);
  // "127.0.0.1:PORT" of its client API, and the --cluster flag naming it.
  const std::string& endpoint() const { return endpoint_; }
  std::string cluster_flag() const { return "--cluster=etcd://" + endpoint_; }
  // The same on `also_on`.
  std::string cluster_flag_on_also() const {
    return "--cluster=etcd://" + also_on_ + ":" + std::to_string(client_port_);
  }
  std::string log() const;

 private:
  EtcdProcess() = default;
  absl::Status Launch();
  TempDir dir_;
  std::string endpoint_;
  std::string also_on_;
  int client_port_ = 0, peer_port_ = 0;
  int generation_ = 0;  // data folder number (Restart(wipe) starts a new one)
  pid_t pid_ = -1;
};

// Three etcd members in one cluster on loopback (data in a temp folder, stopped by pid),
// for the failover tests: which one leads, and freezing it as a hung machine would.
class EtcdCluster {
 public:
  // Returns once the cluster has a leader and takes writes (30 s).
  static absl::StatusOr<std::unique_ptr<EtcdCluster>> Start();
  // SIGCONT, then SIGTERM (SIGKILL after 5 s) each member.
  ~EtcdCluster();

  // The --cluster flag naming every member, and each member's host:port.
  std::string cluster_flag() const;
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  // The member that leads now (etcdctl endpoint status, from Debian's etcd-client).
  absl::StatusOr<int> Leader() const;
  void Freeze(int member);  // SIGSTOP
  void Thaw(int member);    // SIGCONT

 private:
  EtcdCluster() = default;
  TempDir dir_;
  std::vector<std::string> endpoints_;
  std::vector<pid_t> pids_;
};

// A loopback TCP port nothing listens on right now.
int FreeLoopbackPort();

}  // namespace kvwarden::testing
