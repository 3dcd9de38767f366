// A demo model worker: registers a lease, grows sequences token chunk by token chunk
// (ReserveSlots + WriteKV), reads every sequence back and checks it byte for byte, then
// holds its sequences until --hold-file exists and releases them.
//
// Prints one line per quota refusal and, at the end of the work, one summary line:
//   summary worker=NAME ops=N seconds=S bytes_written=B bytes_read=B verified_tokens=T
//           mismatches=M refusals=R sequences_held=H

#include <unistd.h>

#include <algorithm>
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

// Act two: one sequence, a prompt, then decode steps under a retention policy. A
// synthetic attention generator lists every 7th position (heavy hitters), the newest 4
// tokens and 2% of the rest. Prints one "decode" summary line.
int Decode(kvwarden::Client& client, uint64_t lease, const std::string& name,
           const std::string& pool, const std::string& policy_name, uint32_t budget,
           uint32_t prompt, uint32_t steps) {
  using kvwarden::client::Policy;
  Policy policy = policy_name == "scissorhands" ? Policy::Scissorhands(budget)
                  : policy_name == "streaming"  ? Policy::Streaming(budget)
                                                : Policy::Full();
  auto seq = client.CreateSequence(lease, pool, prompt + steps, policy);
  if (!seq.ok()) {
    std::fprintf(stderr, "%s: CreateSequence: %s\n", name.c_str(), seq.status().ToString().c_str());
    return 1;
  }
  const auto& l = seq->layout;
  auto append = [&](uint32_t first, uint32_t n) -> absl::Status {
    auto r = client.ReserveSlots(seq->id, n);
    if (!r.ok()) return r.status();
    std::string k, v;
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      k += Pattern(seq->id, layer, l.num_kv_heads, first, n, l.token_bytes(), false);
      v += Pattern(seq->id, layer, l.num_kv_heads, first, n, l.token_bytes(), true);
    }
    return client.WriteKV(seq->id, l, 0, l.num_layers, first, n, Bytes(k), Bytes(v));
  };
  // The prompt goes in chunks of 64 tokens (a streaming budget cannot take more than
  // budget - sinks new tokens at once).
  for (uint32_t at = 0; at < prompt; at += 64) {
    if (absl::Status s = append(at, std::min(64u, prompt - at)); !s.ok()) {
      std::fprintf(stderr, "%s: prompt: %s\n", name.c_str(), s.ToString().c_str());
      return 1;
    }
  }
  auto stream = client.OpenStatsStream();
  const uint32_t heads = l.num_layers * l.num_kv_heads;
  // The worker's view of its live positions per (layer, head), kept in step with the daemon.
  std::vector<std::vector<uint32_t>> live(heads);
  {
    auto back = client.ReadKV(seq->id, 0, l.num_layers, 0, 0);
    if (!back.ok()) return 1;
    for (const auto& kv : *back) {
      size_t slot = 0;
      for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
        auto& positions = live[kv.layer * l.num_kv_heads + h];
        for (uint32_t i = 0; i < kv.head_live_counts[h]; ++i, ++slot) {
          positions.push_back(kv.positions.empty() ? i : kv.positions[slot]);
        }
      }
    }
  }
  uint64_t epoch = client.DescribeSequence(seq->id)->epoch, evicted = 0, peak_pages = 0;
  uint32_t rng = 12345;
  const absl::Time start = absl::Now();
  for (uint32_t step = 0; step < steps; ++step) {
    const uint32_t pos = prompt + step;
    if (absl::Status s = append(pos, 1); !s.ok()) {
      std::fprintf(stderr, "%s: step %u: %s\n", name.c_str(), step, s.ToString().c_str());
      return 1;
    }
    if (policy_name == "streaming") {
      // The daemon made room at ReserveSlots; mirror it (sinks 4 + newest).
      for (auto& positions : live) {
        positions.push_back(pos);
        if (positions.size() > budget) {
          evicted += 1;
          positions.erase(positions.begin() + 4);
        }
      }
    } else if (policy_name == "scissorhands") {
      kvwarden::client::DecodeStep ds;
      for (uint32_t lh = 0; lh < heads; ++lh) {
        live[lh].push_back(pos);
        kvwarden::client::HeadStats hs{lh / l.num_kv_heads,
                                       lh % l.num_kv_heads,
                                       static_cast<uint32_t>(live[lh].size()),
                                       {},
                                       {}};
        for (uint32_t j = 0; j < live[lh].size(); ++j) {
          const uint32_t p = live[lh][j];
          rng = rng * 1664525u + 1013904223u;
          if (p % 7 == 0 || p + 4 > pos || (rng >> 24) < 5) hs.listed.push_back(j);
        }
        ds.heads.push_back(std::move(hs));
      }
      auto u = (*stream)->SendSteps(seq->id, epoch, {ds});
      if (!u.ok()) {
        std::fprintf(stderr, "%s: stats: %s\n", name.c_str(), u.status().ToString().c_str());
        return 1;
      }
      epoch = u->epoch;
      for (const auto& h : u->heads) {
        auto& positions = live[h.layer * l.num_kv_heads + h.head];
        for (uint32_t gone : h.evicted_positions) {
          positions.erase(std::find(positions.begin(), positions.end(), gone));
          ++evicted;
        }
      }
    }
    if (step % 64 == 63)
      peak_pages = std::max<uint64_t>(peak_pages, client.DescribeSequence(seq->id)->pages_held);
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  auto info = client.DescribeSequence(seq->id);
  // Every kept token's bytes still read back exactly.
  auto back = client.ReadKV(seq->id, 0, l.num_layers, 0, 0, info->epoch);
  uint64_t checked = 0, bad = 0;
  for (const auto& kv : *back) {
    size_t slot = 0;
    for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
      for (uint32_t i = 0; i < kv.head_live_counts[h]; ++i, ++slot) {
        const uint32_t p = kv.positions.empty() ? i : kv.positions[slot];
        const std::string want =
            Pattern(seq->id, kv.layer, l.num_kv_heads, p, 1, l.token_bytes(), false);
        bad += kv.k.compare(slot * l.token_bytes(), l.token_bytes(), want, h * l.token_bytes(),
                            l.token_bytes()) != 0;
        ++checked;
      }
    }
  }
  std::printf(
      "decode worker=%s policy=%s tokens=%u pages_end=%u pages_peak=%llu bytes_end=%llu "
      "evicted=%llu evictions_per_s=%.0f steps_per_s=%.0f epoch=%llu checked=%llu "
      "mismatches=%llu\n",
      name.c_str(), policy_name.c_str(), prompt + steps, info->pages_held,
      static_cast<unsigned long long>(std::max<uint64_t>(peak_pages, info->pages_held)),
      static_cast<unsigned long long>(uint64_t{info->pages_held} * l.layer_bytes(l.page_tokens) *
                                      2),
      static_cast<unsigned long long>(evicted), evicted / seconds, steps / seconds,
      static_cast<unsigned long long>(info->epoch), static_cast<unsigned long long>(checked),
      static_cast<unsigned long long>(bad));
  (void)(*stream)->Close();
  (void)client.ReleaseSequence(seq->id);
  return bad == 0 ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  std::string target = "127.0.0.1:50051", token, name = "worker", pool = "main", hold_file;
  uint32_t sequences = 4, tokens = 512, chunk = 64, decode_steps = 0, budget = 128;
  std::string policy = "full";
  CLI::App app{"kvwarden demo worker"};
  app.add_option("--target", target);
  app.add_option("--token", token)->required();
  app.add_option("--name", name);
  app.add_option("--pool", pool);
  app.add_option("--sequences", sequences);
  app.add_option("--tokens", tokens, "Tokens per sequence");
  app.add_option("--chunk", chunk, "Tokens per ReserveSlots + WriteKV step");
  app.add_option("--hold-file", hold_file, "Hold sequences until this file exists");
  app.add_option("--decode-steps", decode_steps, "Act two: decode this many steps on one sequence");
  app.add_option("--policy", policy, "Act two: full | streaming | scissorhands")
      ->check(CLI::IsMember({"full", "streaming", "scissorhands"}));
  app.add_option("--budget", budget, "Act two: slots per (layer, head) for streaming/scissorhands");
  CLI11_PARSE(app, argc, argv);

  kvwarden::client::Options options;
  options.target = target;
  options.token = token;
  options.timeout = absl::Seconds(30);
  auto client = kvwarden::Client::Connect(options);
  auto lease = (*client)->RegisterWorker(name, kvwarden::client::Role::kBoth, 5000);
  if (!lease.ok()) {
    std::fprintf(stderr, "%s: RegisterWorker: %s\n", name.c_str(),
                 lease.status().ToString().c_str());
    return 1;
  }
  kvwarden::client::LeaseKeeper keeper(client->get(), *lease);
  // A clean exit ends the lease (ReleaseWorker): the daemon logs a release, not a lapse.
  auto end_lease = [&](int rc) {
    (void)(*client)->ReleaseWorker(lease->id);
    return rc;
  };
  if (decode_steps > 0) {
    return end_lease(Decode(**client, lease->id, name, pool, policy, budget, tokens, decode_steps));
  }

  uint64_t ops = 0, written = 0, read = 0, verified = 0, mismatches = 0, refusals = 0;
  std::vector<uint64_t> held;
  const absl::Time start = absl::Now();
  for (uint32_t s = 0; s < sequences; ++s) {
    auto seq = (*client)->CreateSequence(lease->id, pool, tokens);
    ++ops;
    if (!seq.ok()) {
      std::fprintf(stderr, "%s: CreateSequence: %s\n", name.c_str(),
                   seq.status().ToString().c_str());
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
  while (!hold_file.empty() && access(hold_file.c_str(), F_OK) != 0)
    absl::SleepFor(absl::Milliseconds(20));
  for (uint64_t id : held) (void)(*client)->ReleaseSequence(id);
  return end_lease(mismatches == 0 ? 0 : 3);
}
