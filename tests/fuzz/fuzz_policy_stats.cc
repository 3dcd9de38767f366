// libFuzzer: a retention policy from the wire, then ReserveSlots and StreamStats
// messages against one sequence, through the same conversions and SequenceTable calls
// the daemon's handlers make. After every input the table's invariants must hold.
//
// Records (fuzz_input.h): tag 0 = RetentionPolicy (the first one creates the sequence),
// 1 = reserve (payload: u16 token count), 2 = StatsMessage, 3 = fork and continue on
// the fork.

#include <cstdlib>
#include <memory>

#include "cache_service/core/memory/page_pool.h"
#include "cache_service/retention/registry.h"
#include "cache_service/rpc/proto_convert.h"
#include "cache_service/core/sequences/sequence_table.h"
#include "cache_service/core/tenancy/tenant_ledger.h"
#include "cache_service/core/tenancy/worker_leases.h"
#include "cache_service/retention/registry.h"
#include "kvwarden/v1/control.pb.h"
#include "kvwarden/v1/policy.pb.h"
#include "tests/fuzz/fuzz_input.h"

namespace kvwarden::fuzz {
namespace {

struct World {
  World()
      : ledger({TenantSpec{"alpha", 0, 4096, 1}}),
        leases(LeaseOptions{absl::Hours(1), absl::Milliseconds(1), absl::Hours(2)}, Clock::Real()) {
    PagePoolOptions opts;
    opts.name = "main";
    opts.layout = KvLayout{4, 2, 4, DType::kFp16, 4};
    opts.chunk_pages = 64;
    opts.num_chunks = 64;
    opts.device = CpuPoolDevice();
    opts.on_pages_freed = [this](TenantId t, uint64_t pages, uint64_t bytes) { ledger.Refund(t, pages, bytes); };
    pool = *PagePool::Create(std::move(opts));
    table = std::make_unique<SequenceTable>(SequenceTable::Options{&ledger, &leases});
    lease = leases.Register(0, "fuzz", WorkerRole::kBoth, absl::Hours(1))->id;
  }
  TenantLedger ledger;
  WorkerLeases leases;
  std::unique_ptr<PagePool> pool;
  std::unique_ptr<SequenceTable> table;
  LeaseId lease = 0;
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
  std::vector<SequenceId> created;
  SequenceId seq = 0;
  uint8_t tag = 0;
  std::string payload;
  while (records.Next(&tag, &payload)) {
    switch (tag % 4) {
      case 0: {
        if (seq != 0) break;
        v1::RetentionPolicy wire;
        if (!wire.ParseFromString(payload)) break;
        absl::StatusOr<RetentionPolicy> policy = PolicyFromProto(wire, w.pool->layout(), "policy");
        if (!policy.ok()) break;
        absl::StatusOr<SequenceId> id = w.table->Create({0, w.lease, w.pool.get(), 512, *policy});
        if (!id.ok()) break;
        seq = *id;
        created.push_back(seq);
        break;
      }
      case 1: {
        if (seq == 0 || payload.size() < 2) break;
        const uint32_t n = static_cast<uint8_t>(payload[0]) | static_cast<uint8_t>(payload[1]) << 8;
        (void)w.table->Reserve(seq, 0, n);
        break;
      }
      case 2: {
        if (seq == 0) break;
        v1::StatsMessage msg;
        if (!msg.ParseFromString(payload)) break;
        (void)w.table->ApplyStats(seq, 0, FromProto(msg));
        break;
      }
      case 3: {
        if (seq == 0) break;
        absl::StatusOr<ForkResult> fork = w.table->Fork(seq, 0, w.lease);
        if (!fork.ok()) break;
        seq = fork->id;
        created.push_back(seq);
        break;
      }
    }
  }
  std::vector<PagePool*> pools = {w.pool.get()};
  if (absl::Status s = w.table->CheckInvariants(pools); !s.ok()) {
    std::fprintf(stderr, "invariant broken: %s\n", std::string(s.message()).c_str());
    std::abort();
  }
  for (SequenceId id : created) (void)w.table->Release(id, 0);
  if (w.pool->used_pages() != 0 || w.ledger.Usage(0).pages != 0) {
    std::fprintf(stderr, "pages leaked: pool %llu, ledger %llu\n",
                 static_cast<unsigned long long>(w.pool->used_pages()),
                 static_cast<unsigned long long>(w.ledger.Usage(0).pages));
    std::abort();
  }
  return 0;
}
