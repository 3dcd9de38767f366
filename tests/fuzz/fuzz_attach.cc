// libFuzzer: records on the attach socket of a real AttachServer (its own thread), as a
// hostile same-host client would send them. Every record is answered or the connection
// closed within a deadline (a stall aborts), and answers parse.
//
// Records (fuzz_input.h): the tag picks nothing; the payload is the socket record. A
// payload that parses as an AttachRequest with lease_id < 4 gets the real lease (and
// with an empty token, alpha's), so the fuzzer reaches past authentication.

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "cache_service/dataplane/attach_server.h"
#include "cache_service/core/tenancy/authenticator.h"
#include "cache_service/core/memory/page_pool.h"
#include "cache_service/core/memory/pool_set.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "cache_service/core/tenancy/worker_leases.h"
#include "common/fd/seqpacket.h"
#include "kvwarden/v1/transfer.pb.h"
#include "tests/fuzz/fuzz_input.h"

namespace kvwarden::fuzz {
namespace {

struct World {
  World()
      : ledger({TenantSpec{"alpha", 0, 4096, 1}, TenantSpec{"beta", 0, 4096, 1}}),
        leases(LeaseOptions{absl::Hours(1), absl::Milliseconds(1), absl::Hours(2)}, Clock::Real()),
        auth("admin-token", {"alpha-token", "beta-token"}) {
    PagePoolOptions opts;
    opts.name = "main";
    opts.layout = KvLayout{2, 2, 4, DType::kFp16, 4};
    opts.chunk_pages = 8;
    opts.num_chunks = 4;
    opts.device = CpuPoolDevice();
    pools.Add(*PagePool::Create(std::move(opts)));
    std::vector<PageId> pages;
    (void)pools.all()[0]->Allocate(0, 3, &pages);  // alpha owns a chunk: answers carry an fd
    decode_lease = leases.Register(0, "decode", WorkerRole::kDecode, absl::Hours(1))->id;
    prefill_lease = leases.Register(0, "prefill", WorkerRole::kPrefill, absl::Hours(1))->id;
    char dir[] = "/tmp/kvw-fuzz-attach-XXXXXX";
    path = std::string(mkdtemp(dir)) + "/attach.sock";
    server = *AttachServer::Start(path, &pools, &auth, &leases, {1024, &ledger});
  }
  void Connect() {
    sock.reset(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    if (connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) std::abort();
  }

  TenantLedger ledger;
  WorkerLeases leases;
  Authenticator auth;
  PoolSet pools;
  LeaseId decode_lease = 0, prefill_lease = 0;
  std::string path;
  std::unique_ptr<AttachServer> server;
  UniqueFd sock;
};

World& TheWorld() {
  static World* w = new World();
  return *w;
}

}  // namespace
}  // namespace kvwarden::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvwarden;
  fuzz::World& w = fuzz::TheWorld();
  fuzz::Records records(data, size);
  uint8_t tag = 0;
  std::string payload;
  while (records.Next(&tag, &payload)) {
    if (payload.empty()) continue;
    v1::AttachRequest req;
    if (req.ParseFromString(payload) && req.lease_id() < 4) {
      req.set_lease_id(req.lease_id() % 2 ? w.prefill_lease : w.decode_lease);
      if (req.token().empty()) req.set_token("alpha-token");
      payload = req.SerializeAsString();
    }
    if (!w.sock.valid()) w.Connect();
    if (!SendRecord(w.sock.get(), payload).ok()) {
      w.sock.reset();  // the daemon hung up
      continue;
    }
    std::vector<UniqueFd> fds;
    absl::StatusOr<std::string> answer = RecvRecord(w.sock.get(), &fds, absl::Seconds(5));
    if (answer.status().code() == absl::StatusCode::kDeadlineExceeded) {
      std::fprintf(stderr, "attach server did not answer within 5 s\n");
      std::abort();
    }
    if (!answer.ok()) {
      w.sock.reset();
      continue;
    }
    v1::AttachResponse resp;
    if (!resp.ParseFromString(*answer)) std::abort();
    size_t with_fd = 0;
    for (const auto& c : resp.chunks()) with_fd += c.has_fd() ? 1 : 0;
    if (with_fd > fds.size() && !RecvFds(w.sock.get(), with_fd, &fds, absl::Seconds(5)).ok()) std::abort();
  }
  return 0;
}
