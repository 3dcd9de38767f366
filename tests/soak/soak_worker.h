#pragma once

// One soak worker process: `threads` clients of one tenant until a deadline. Good
// tenants create/fork/reserve/write/read/stats/transfer/attach/release with KV bytes
// checked against a deterministic pattern; the attacker runs the patterns of issue 9
// against its own sequences. Prints one REPORT line at exit (soak_main.cc reads it).

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace kvwarden::soak {

struct WorkerArgs {
  std::string target;
  std::string token;
  std::string attach_socket;
  std::string latency_file;  // ReserveSlots latencies in µs, one per line
  bool attacker = false;
  int threads = 4;
  absl::Time until;
  uint64_t seed = 1;
};

int RunWorker(const WorkerArgs& args);

}  // namespace kvwarden::soak
