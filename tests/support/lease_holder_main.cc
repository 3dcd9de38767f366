// A worker process for crash tests: registers a lease (kept alive), creates a sequence,
// reserves and writes tokens, prints "READY <sequence_id> <lease_id>" and waits to be
// killed. Usage: kvw_lease_holder TARGET TOKEN POOL TTL_MS TOKENS
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "kvwarden/client.h"
#include "tests/support/kv_pattern.h"

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s TARGET TOKEN POOL TTL_MS TOKENS\n", argv[0]);
    return 2;
  }
  auto client = kvwarden::Client::Connect({argv[1], argv[2], absl::Seconds(10)});
  const uint32_t ttl = std::atoi(argv[4]), n = std::atoi(argv[5]);
  auto lease = (*client)->RegisterWorker("lease-holder", kvwarden::client::Role::kPrefill, ttl);
  if (!lease.ok()) return 1;
  kvwarden::client::LeaseKeeper keeper(client->get(), *lease);
  auto seq = (*client)->CreateSequence(lease->id, argv[3], n);
  if (!seq.ok() || !(*client)->ReserveSlots(seq->id, n).ok()) return 1;
  const auto& l = seq->layout;
  std::string k, v;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    k += kvwarden::testing::PatternKv(seq->id, layer, l.num_kv_heads, 0, n, l.token_bytes(), false);
    v += kvwarden::testing::PatternKv(seq->id, layer, l.num_kv_heads, 0, n, l.token_bytes(), true);
  }
  if (!(*client)->WriteKV(seq->id, l, 0, l.num_layers, 0, n,
                          {reinterpret_cast<const uint8_t*>(k.data()), k.size()},
                          {reinterpret_cast<const uint8_t*>(v.data()), v.size()}).ok()) {
    return 1;
  }
  std::printf("READY %llu %llu\n", static_cast<unsigned long long>(seq->id),
              static_cast<unsigned long long>(lease->id));
  std::fflush(stdout);
  while (true) pause();
}
