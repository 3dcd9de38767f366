// A worker process killed mid-transfer: registers a lease (kept alive), creates a
// sequence, begins a UCX write transfer over all of it, writes the first half of its
// pages, prints "READY <sequence_id> <transfer_id>" and waits to be killed with the
// transfer still open. Usage: kvw_transfer_holder TARGET TOKEN POOL TTL_MS TOKENS TRANSPORTS
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kvwarden/client.h"
#include "kvwarden/data_plane.h"

int main(int argc, char** argv) {
  using namespace kvwarden::client;
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s TARGET TOKEN POOL TTL_MS TOKENS TRANSPORTS\n", argv[0]);
    return 2;
  }
  auto client = kvwarden::Client::Connect({argv[1], argv[2], absl::Seconds(10)});
  const uint32_t ttl = std::atoi(argv[4]), n = std::atoi(argv[5]);
  auto lease = (*client)->RegisterWorker("transfer-holder", Role::kPrefill, ttl);
  if (!lease.ok()) return 1;
  LeaseKeeper keeper(client->get(), *lease);
  auto seq = (*client)->CreateSequence(lease->id, argv[3], n);
  if (!seq.ok() || !(*client)->ReserveSlots(seq->id, n).ok()) return 1;
  DataPlaneOptions opts;
  opts.pool = argv[3];
  opts.transports = argv[6];
  opts.transfer_ttl_ms = 60000;  // far past the lease: the lease's end must end it
  auto dp = DataPlane::Connect(client->get(), lease->id, opts);
  if (!dp.ok()) {
    std::fprintf(stderr, "%s\n", std::string(dp.status().message()).c_str());
    return 1;
  }
  auto t = (*dp)->Begin({seq->id, 0, seq->layout.num_layers, 0, n}, TransferMode::kWrite);
  if (!t.ok()) return 1;
  std::vector<uint8_t> page((*dp)->page_bytes() * (*t)->num_pages(), 0x5A);
  if (!(*t)->WritePages(0, 0, (*t)->num_pages() / 2 + 1, page.data()).ok()) return 1;
  std::printf("READY %llu %llu\n", static_cast<unsigned long long>(seq->id),
              static_cast<unsigned long long>((*t)->id()));
  std::fflush(stdout);
  while (true) pause();
}
