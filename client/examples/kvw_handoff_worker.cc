// The demo's prefill -> decode hand-off over the data plane (README quick start, act
// three). Two processes of one tenant:
//   --role=prefill: creates a sequence, writes its KV pages with UCX RMA puts, prints
//     "handoff_seq=<id>", then holds it until --hold-file exists.
//   --role=decode --seq=ID: attaches the pool (read-only: a decode lease), maps the
//     sequence and checks every page in place, then also gets it by UCX RMA; prints one
//     "handoff ..." line with the figures. With --hold-file it keeps the mapping (and its
//     transfer lease) until the file exists, so `kvwctl transfers/attached` show them.
// Cluster mode (act four): --handle=NAME names the sequence cluster-wide (prefill) or
// finds it (decode: on whichever node holds it), and --migrate-to=NODE moves it to
// another daemon after the prefill, as a prefill node hands a request to a decode node.

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/time/clock.h"
#include "kvwarden/client.h"
#include "kvwarden/data_plane.h"

namespace {

using namespace kvwarden::client;

uint8_t PatternByte(uint64_t seq, size_t i) {
  return static_cast<uint8_t>((i * 2654435761u) >> 13 ^ seq * 131);
}

void WaitFor(const std::string& file) {
  while (!file.empty() && access(file.c_str(), F_OK) != 0) absl::SleepFor(absl::Milliseconds(20));
}

// The bytes' pattern: keyed by the handle when there is one (a migrated sequence has a
// new id), else by the sequence id.
uint64_t Seed(const std::string& handle, uint64_t seq) {
  return handle.empty() ? seq : std::hash<std::string>{}(handle);
}

int Prefill(kvwarden::Client& c, uint64_t lease, const std::string& pool, uint32_t tokens,
            const std::string& transports, const std::string& hold_file, const std::string& handle,
            const std::string& migrate_to) {
  auto seq = c.CreateSequence(lease, pool, tokens, Policy::Full());
  if (!seq.ok() || !c.ReserveSlots(seq->id, tokens).ok()) {
    std::fprintf(stderr, "prefill: %s\n", seq.status().ToString().c_str());
    return 1;
  }
  auto dp = DataPlane::Connect(&c, lease, {pool, transports});
  if (!dp.ok()) {
    std::fprintf(stderr, "prefill: %s\n", dp.status().ToString().c_str());
    return 1;
  }
  const PageRange r{seq->id, 0, seq->layout.num_layers, 0, tokens};
  std::vector<uint8_t> buf(RangeBytes(r, seq->layout));
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = PatternByte(Seed(handle, seq->id), i);
  const absl::Time start = absl::Now();
  if (absl::Status s = (*dp)->Put(r, buf); !s.ok()) {
    std::fprintf(stderr, "prefill: Put: %s\n", s.ToString().c_str());
    return 1;
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("handoff_seq=%llu bytes=%zu put_MiBps=%.0f\n",
              static_cast<unsigned long long>(seq->id), buf.size(), buf.size() / 1048576.0 / secs);
  std::fflush(stdout);
  if (!handle.empty()) {
    // A node publishes handles once it is registered in etcd: retry while it is not.
    absl::StatusOr<Handle> h;
    for (int i = 0; i < 100; ++i) {
      h = c.PublishHandle(seq->id, handle);
      if (h.ok() || h.status().code() != absl::StatusCode::kUnavailable) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    if (!h.ok()) {
      std::fprintf(stderr, "prefill: PublishHandle: %s\n", h.status().ToString().c_str());
      return 1;
    }
    std::printf("handle %s -> sequence %llu on node %s\n", handle.c_str(),
                static_cast<unsigned long long>(seq->id), h->node.c_str());
  }
  if (!migrate_to.empty()) {
    auto moved = c.MigrateSequence(seq->id, migrate_to);
    if (!moved.ok()) {
      std::fprintf(stderr, "prefill: MigrateSequence: %s\n", moved.status().ToString().c_str());
      return 1;
    }
    std::printf(
        "migrated sequence %llu to node %s (%s) as sequence %llu: %.1f MiB in %.1f ms, every page "
        "checked\n",
        static_cast<unsigned long long>(seq->id), moved->node.c_str(), moved->grpc_address.c_str(),
        static_cast<unsigned long long>(moved->sequence_id), moved->bytes_moved / 1048576.0,
        absl::ToDoubleMilliseconds(moved->duration));
    std::fflush(stdout);
    WaitFor(hold_file);
    return 0;
  }
  std::fflush(stdout);
  WaitFor(hold_file);
  (void)c.ReleaseSequence(seq->id);
  return 0;
}

int Decode(kvwarden::Client& c, uint64_t lease, const std::string& pool, uint64_t seq_id,
           uint64_t seed, uint32_t tokens, const std::string& transports,
           const std::string& hold_file) {
  auto info = c.DescribeSequence(seq_id);
  if (!info.ok()) {
    std::fprintf(stderr, "decode: %s\n", info.status().ToString().c_str());
    return 1;
  }
  const PageRange r{seq_id, 0, info->layout.num_layers, 0, tokens};
  const size_t page = PageBytes(info->layout);
  const uint32_t pages = RangePages(r, info->layout);
  auto attached = AttachedPool::Attach(&c, lease, {pool});
  if (!attached.ok()) {
    std::fprintf(stderr, "decode: attach: %s\n", attached.status().ToString().c_str());
    return 1;
  }
  absl::Time start = absl::Now();
  auto m = (*attached)->Map(r);
  if (!m.ok()) {
    std::fprintf(stderr, "decode: map: %s\n", m.status().ToString().c_str());
    return 1;
  }
  uint64_t bad = 0;
  for (uint32_t layer = 0; layer < r.layer_count; ++layer) {
    for (uint32_t p = 0; p < pages; ++p) {
      const uint8_t* in_place = (*m)->page(layer, p);
      const size_t base = (size_t{layer} * pages + p) * page;
      for (size_t b = 0; b < page; ++b) bad += in_place[b] != PatternByte(seed, base + b);
    }
  }
  const double attach_secs = absl::ToDoubleSeconds(absl::Now() - start);
  auto dp = DataPlane::Connect(&c, lease, {pool, transports});
  if (!dp.ok()) {
    std::fprintf(stderr, "decode: %s\n", dp.status().ToString().c_str());
    return 1;
  }
  std::vector<uint8_t> buf(RangeBytes(r, info->layout));
  start = absl::Now();
  if (auto e = (*dp)->Get(r, absl::MakeSpan(buf)); !e.ok()) {
    std::fprintf(stderr, "decode: Get: %s\n", e.status().ToString().c_str());
    return 1;
  }
  const double get_secs = absl::ToDoubleSeconds(absl::Now() - start);
  for (size_t i = 0; i < buf.size(); ++i) bad += buf[i] != PatternByte(seed, i);
  std::printf(
      "handoff seq=%llu bytes=%zu attached_read_only=%d checked_in_place_MiBps=%.0f "
      "get_MiBps=%.0f transports=%s mismatches=%llu\n",
      static_cast<unsigned long long>(seq_id), buf.size(), !(*attached)->writable(),
      buf.size() / 1048576.0 / attach_secs, buf.size() / 1048576.0 / get_secs, transports.c_str(),
      static_cast<unsigned long long>(bad));
  std::fflush(stdout);
  WaitFor(hold_file);
  return bad == 0 ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  std::string target = "127.0.0.1:50051", token, role, pool = "main", hold_file, transports = "shm",
              handle, migrate_to;
  uint64_t seq = 0;
  uint32_t tokens = 2048;
  CLI::App app{"kvwarden prefill -> decode hand-off over the data plane"};
  app.add_option("--target", target);
  app.add_option("--token", token)->required();
  app.add_option("--role", role)->required()->check(CLI::IsMember({"prefill", "decode"}));
  app.add_option("--pool", pool);
  app.add_option("--seq", seq, "decode: the sequence the prefill worker announced");
  app.add_option("--tokens", tokens);
  app.add_option("--transports", transports, "UCX_TLS for the RMA path: shm or tcp");
  app.add_option("--hold-file", hold_file, "Hold until this file exists");
  app.add_option(
      "--handle", handle,
      "Cluster mode: prefill names the sequence so; decode finds it by this name instead of --seq");
  app.add_option("--migrate-to", migrate_to,
                 "Cluster mode, prefill: move the sequence to this node");
  CLI11_PARSE(app, argc, argv);

  kvwarden::client::Options options;
  options.target = target;
  options.token = token;
  options.timeout = absl::Seconds(30);
  auto client = kvwarden::Client::Connect(options);
  if (role == "decode" && !handle.empty()) {
    // Found by name: the sequence is on whichever node holds it now.
    auto found = (*client)->ResolveHandle(handle);
    if (!found.ok()) {
      std::fprintf(stderr, "decode: ResolveHandle: %s\n", found.status().ToString().c_str());
      return 1;
    }
    std::printf("handle %s resolved: sequence %llu on node %s (%s)\n", handle.c_str(),
                static_cast<unsigned long long>(found->sequence_id), found->node.c_str(),
                found->grpc_address.c_str());
    seq = found->sequence_id;
    if (found->grpc_address != target) {
      options.target = found->grpc_address;
      client = kvwarden::Client::Connect(options);
    }
  }
  auto lease =
      (*client)->RegisterWorker(role, role == "prefill" ? Role::kPrefill : Role::kDecode, 5000);
  if (!lease.ok()) {
    std::fprintf(stderr, "%s: %s\n", role.c_str(), lease.status().ToString().c_str());
    return 1;
  }
  LeaseKeeper keeper(client->get(), *lease);
  const int rc = role == "prefill" ? Prefill(**client, lease->id, pool, tokens, transports,
                                             hold_file, handle, migrate_to)
                                   : Decode(**client, lease->id, pool, seq, Seed(handle, seq),
                                            tokens, transports, hold_file);
  (void)(*client)->ReleaseWorker(lease->id);  // a clean exit: a release, not a lapse
  return rc;
}
