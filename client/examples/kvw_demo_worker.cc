// A demo model worker: registers a lease, grows sequences token chunk by token chunk
// (ReserveSlots + WriteKV), reads every sequence back and checks it byte for byte, then
// holds its sequences until --hold-file exists and releases them.
//
// Prints one line per quota refusal and, at the end of the work, one summary line:
//   summary worker=NAME ops=N seconds=S bytes_written=B bytes_read=B verified_tokens=T
//           mismatches=M refusals=R sequences_held=H

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "kvwarden/client.h"

namespace {

// Bytes that depend on (seed, layer, head, position) only, so a read-back is checkable.
std::string Pattern(uint64_t seed, uint32_t layer, uint32_t heads, uint32_t first, uint32_t n,
                    size_t tb, bool is_v) {
  std::string out(size_t{heads} * n * tb, '\0');
  for (uint32_t h = 0; h < heads; ++h) {
    for (uint32_t t = 0; t < n; ++t) {
      uint64_t x = (seed * 0x9E3779B97F4A7C15ull) ^ (uint64_t{layer} << 40) ^ (uint64_t{h} << 32) ^
                   (first + t) ^ (is_v ? 0xABCDull << 48 : 0);
      for (size_t b = 0; b < tb; ++b) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        out[(size_t{h} * n + t) * tb + b] = static_cast<char>(x >> 56);
      }
    }
  }
  return out;
}

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

int main(int argc, char** argv) {
  std::string target = "127.0.0.1:50051", token, name = "worker", pool = "main", hold_file;
  uint32_t sequences = 4, tokens = 512, chunk = 64;
  CLI::App app{"kvwarden demo worker"};
  app.add_option("--target", target);
  app.add_option("--token", token)->required();
  app.add_option("--name", name);
  app.add_option("--pool", pool);
  app.add_option("--sequences", sequences);
  app.add_option("--tokens", tokens, "Tokens per sequence");
  app.add_option("--chunk", chunk, "Tokens per ReserveSlots + WriteKV step");
  app.add_option("--hold-file", hold_file, "Hold sequences until this file exists");
  CLI11_PARSE(app, argc, argv);

  auto client = kvwarden::Client::Connect({target, token, absl::Seconds(30)});
  auto lease = (*client)->RegisterWorker(name, kvwarden::client::Role::kBoth, 5000);
  if (!lease.ok()) {
    std::fprintf(stderr, "%s: RegisterWorker: %s\n", name.c_str(), lease.status().ToString().c_str());
    return 1;
  }
  kvwarden::client::LeaseKeeper keeper(client->get(), *lease);

  uint64_t ops = 0, written = 0, read = 0, verified = 0, mismatches = 0, refusals = 0;
  std::vector<uint64_t> held;
  const absl::Time start = absl::Now();
  for (uint32_t s = 0; s < sequences; ++s) {
    auto seq = (*client)->CreateSequence(lease->id, pool, tokens);
    ++ops;
    if (!seq.ok()) {
      std::fprintf(stderr, "%s: CreateSequence: %s\n", name.c_str(), seq.status().ToString().c_str());
      return 1;
    }
    const auto& l = seq->layout;
    bool refused = false;
    for (uint32_t at = 0; at < tokens && !refused; at += chunk) {
      const uint32_t n = std::min(chunk, tokens - at);
      auto r = (*client)->ReserveSlots(seq->id, n);
      ++ops;
      if (r.status().code() == absl::StatusCode::kResourceExhausted) {
        std::printf("%s: refused as expected: %s\n", name.c_str(), r.status().ToString().c_str());
        ++refusals;
        refused = true;
        break;
      }
      if (!r.ok()) {
        std::fprintf(stderr, "%s: ReserveSlots: %s\n", name.c_str(), r.status().ToString().c_str());
        return 1;
      }
      std::string k, v;
      for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
        k += Pattern(seq->id, layer, l.num_kv_heads, at, n, l.token_bytes(), false);
        v += Pattern(seq->id, layer, l.num_kv_heads, at, n, l.token_bytes(), true);
      }
      absl::Status w = (*client)->WriteKV(seq->id, l, 0, l.num_layers, at, n, Bytes(k), Bytes(v));
      ++ops;
      if (!w.ok()) {
        std::fprintf(stderr, "%s: WriteKV: %s\n", name.c_str(), w.ToString().c_str());
        return 1;
      }
      written += k.size() + v.size();
    }
    if (refused) {  // give back the partial sequence and stop growing
      (void)(*client)->ReleaseSequence(seq->id);
      ++ops;
      break;
    }
    auto back = (*client)->ReadKV(seq->id, 0, l.num_layers, 0, 0, seq->epoch);
    ++ops;
    if (!back.ok()) {
      std::fprintf(stderr, "%s: ReadKV: %s\n", name.c_str(), back.status().ToString().c_str());
      return 1;
    }
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      const auto& got = (*back)[layer];
      read += got.k.size() + got.v.size();
      if (got.k == Pattern(seq->id, layer, l.num_kv_heads, 0, tokens, l.token_bytes(), false) &&
          got.v == Pattern(seq->id, layer, l.num_kv_heads, 0, tokens, l.token_bytes(), true)) {
        verified += tokens;
      } else {
        ++mismatches;
      }
    }
    held.push_back(seq->id);
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf(
      "summary worker=%s ops=%llu seconds=%.3f bytes_written=%llu bytes_read=%llu "
      "verified_tokens=%llu mismatches=%llu refusals=%llu sequences_held=%zu\n",
      name.c_str(), static_cast<unsigned long long>(ops), seconds,
      static_cast<unsigned long long>(written), static_cast<unsigned long long>(read),
      static_cast<unsigned long long>(verified), static_cast<unsigned long long>(mismatches),
      static_cast<unsigned long long>(refusals), held.size());
  std::fflush(stdout);
  while (!hold_file.empty() && access(hold_file.c_str(), F_OK) != 0) absl::SleepFor(absl::Milliseconds(20));
  for (uint64_t id : held) (void)(*client)->ReleaseSequence(id);
  return mismatches == 0 ? 0 : 3;
}
