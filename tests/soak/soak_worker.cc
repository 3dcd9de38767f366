#include "tests/soak/soak_worker.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/fd/seqpacket.h"
#include "grpcpp/grpcpp.h"
#include "kvwarden/client.h"
#include "kvwarden/data_plane.h"
#include "kvwarden/v1/control.grpc.pb.h"
#include "kvwarden/v1/transfer.grpc.pb.h"
#include "kvwarden/v1/transfer.pb.h"
#include "tests/support/kv_pattern.h"

namespace kvwarden::soak {
namespace {

using client::Layout;
using testing::PatternKv;

struct Totals {
  std::atomic<uint64_t> ops{0}, corrupt{0}, unexpected{0};
  // Corrupt bytes by how they were read: ReadKV, a fork's ReadKV, UCX get, attach.
  std::atomic<uint64_t> corrupt_read{0}, corrupt_fork{0}, corrupt_ucx{0}, corrupt_attach{0};
  std::mutex mu;
  std::vector<uint32_t> reserve_us;
  std::string first_unexpected;
};

void Unexpected(Totals& t, const std::string& what) {
  ++t.unexpected;
  std::lock_guard<std::mutex> lock(t.mu);
  if (t.first_unexpected.empty()) t.first_unexpected = what;
}

// Codes a good tenant may see under load and churn; anything else is a finding.
bool Expected(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
    case absl::StatusCode::kResourceExhausted:   // quota, limits
    case absl::StatusCode::kOutOfRange:          // past max_tokens
    case absl::StatusCode::kFailedPrecondition:  // stale epoch, shared page
    case absl::StatusCode::kDeadlineExceeded:    // a busy 2-core machine
    case absl::StatusCode::kUnavailable:         // a transfer lease holds the pages
    case absl::StatusCode::kInvalidArgument:     // a streaming reservation past its budget
    case absl::StatusCode::kAborted:             // a transfer lease that expired under us
      return true;
    default:
      return false;
  }
}

struct Seq {
  uint64_t id = 0;
  uint64_t seed = 0;
  bool full = true;
  bool scissorhands = false;
  uint32_t tokens = 0;
  uint64_t epoch = 0;
  Layout layout;
};

// Counts bytes of a read that differ from the pattern at their positions.
uint64_t CheckRead(const Seq& s, const std::vector<client::LayerKv>& layers, uint32_t token_end) {
  uint64_t bad = 0;
  const size_t tb = s.layout.token_bytes();
  for (const client::LayerKv& kv : layers) {
    size_t at = 0, pos_at = 0;
    for (uint32_t h = 0; h < kv.head_live_counts.size(); ++h) {
      for (uint32_t i = 0; i < kv.head_live_counts[h]; ++i, at += tb) {
        const uint32_t pos = kv.positions.empty() ? i : kv.positions[pos_at + i];
        if (pos >= token_end) continue;
        const std::string want_k = PatternKv(s.seed, kv.layer, s.layout.num_kv_heads, pos, 1, tb, false);
        const std::string want_v = PatternKv(s.seed, kv.layer, s.layout.num_kv_heads, pos, 1, tb, true);
        for (size_t b = 0; b < tb; ++b) {
          bad += kv.k[at + b] != want_k[h * tb + b];
          bad += kv.v[at + b] != want_v[h * tb + b];
        }
      }
      pos_at += kv.head_live_counts[h];
    }
  }
  return bad;
}

// Bytes of pages [0, n) of every layer in RangeBytes layout against the pattern.
uint64_t CheckPages(const Seq& s, uint8_t* buf, uint32_t n) {
  const Layout& l = s.layout;
  const uint32_t pages = (n + l.page_tokens - 1) / l.page_tokens;
  const size_t tb = l.token_bytes();
  uint64_t bad = 0;
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    client::PageView view =
        client::PageView::Contiguous(l, buf + size_t{layer} * pages * client::PageBytes(l), 0, pages);
    const std::string k = PatternKv(s.seed, layer, l.num_kv_heads, 0, n, tb, false);
    const std::string v = PatternKv(s.seed, layer, l.num_kv_heads, 0, n, tb, true);
    for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
      for (uint32_t t = 0; t < n; ++t) {
        bad += std::memcmp(view.k(h, t), k.data() + (size_t{h} * n + t) * tb, tb) != 0;
        bad += std::memcmp(view.v(h, t), v.data() + (size_t{h} * n + t) * tb, tb) != 0;
      }
    }
  }
  return bad;
}

void GoodClient(const WorkerArgs& args, int index, Totals& totals) {
  std::mt19937_64 rng(args.seed * 1000 + index);
  auto pick = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };
  auto client = Client::Connect({args.target, args.token, absl::Seconds(5)});
  if (!client.ok()) return Unexpected(totals, client.status().ToString());
  Client& c = **client;
  auto lease = c.RegisterWorker(absl::StrCat("soak-", index), client::Role::kBoth, 1000);
  if (!lease.ok()) return Unexpected(totals, lease.status().ToString());
  client::LeaseKeeper keeper(&c, *lease);
  std::unique_ptr<client::DataPlane> dp;
  std::unique_ptr<client::AttachedPool> attached;
  std::vector<Seq> seqs;
  auto stats = c.OpenStatsStream();
  while (absl::Now() < args.until) {
    ++totals.ops;
    const uint32_t op = pick(100);
    if (seqs.empty() || (op < 10 && seqs.size() < 8)) {  // create
      Seq s;
      s.seed = rng();
      client::Policy policy = client::Policy::Full();
      switch (pick(3)) {
        case 1:
          policy = client::Policy::Scissorhands(32);
          policy.recent = 4;
          policy.window = 16;
          s.full = false;
          s.scissorhands = true;
          break;
        case 2:
          policy = client::Policy::Streaming(32);
          s.full = false;
          break;
        default: break;
      }
      auto created = c.CreateSequence(lease->id, "main", 256, policy);
      if (!created.ok()) {
        if (!Expected(created.status())) Unexpected(totals, created.status().ToString());
        continue;
      }
      s.id = created->id;
      s.layout = created->layout;
      seqs.push_back(s);
      continue;
    }
    Seq& s = seqs[pick(seqs.size())];
    if (op < 40) {  // reserve + write
      const uint32_t n = 1 + pick(16);
      const absl::Time start = absl::Now();
      auto r = c.ReserveSlots(s.id, n);
      const uint32_t us = static_cast<uint32_t>(absl::ToInt64Microseconds(absl::Now() - start));
      {
        std::lock_guard<std::mutex> lock(totals.mu);
        totals.reserve_us.push_back(us);
      }
      if (!r.ok()) {
        if (!Expected(r.status())) Unexpected(totals, r.status().ToString());
        continue;
      }
      s.epoch = r->epoch;
      const Layout& l = s.layout;
      std::string k, v;
      for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
        k += PatternKv(s.seed, layer, l.num_kv_heads, r->first_position, n, l.token_bytes(), false);
        v += PatternKv(s.seed, layer, l.num_kv_heads, r->first_position, n, l.token_bytes(), true);
      }
      // Reserved tokens that were never written would read as corrupt later: retry a
      // refused write (e.g. the tenant at max_open_streams), else drop the sequence.
      absl::Status w;
      for (int attempt = 0; attempt < 20; ++attempt) {
        w = c.WriteKV(s.id, l, 0, l.num_layers, r->first_position, n,
                      {reinterpret_cast<const uint8_t*>(k.data()), k.size()},
                      {reinterpret_cast<const uint8_t*>(v.data()), v.size()});
        if (w.ok() || !Expected(w)) break;
        absl::SleepFor(absl::Milliseconds(10));
      }
      if (w.ok()) {
        s.tokens = r->first_position + n;
      } else {
        if (!Expected(w)) Unexpected(totals, w.ToString());
        (void)c.ReleaseSequence(s.id);
        s = seqs.back();
        seqs.pop_back();
      }
    } else if (op < 60) {  // read back and check
      if (s.tokens == 0) continue;
      auto read = c.ReadKV(s.id, 0, s.layout.num_layers, 0, s.tokens);
      if (!read.ok()) {
        if (!Expected(read.status())) Unexpected(totals, read.status().ToString());
        continue;
      }
      const uint64_t bad = CheckRead(s, *read, s.tokens);
      totals.corrupt += bad;
      totals.corrupt_read += bad;
    } else if (op < 70 && s.scissorhands && stats.ok()) {  // decode statistics
      auto info = c.DescribeSequence(s.id);
      if (!info.ok() || s.tokens == 0) continue;
      client::DecodeStep step;
      for (uint32_t layer = 0; layer < info->heads.size(); ++layer) {
        for (uint32_t h = 0; h < info->heads[layer].size(); ++h) {
          client::HeadStats hs{layer, h, info->heads[layer][h].live_slots, {}, {}};
          for (uint32_t j = 0; j < hs.attended; ++j) {
            if (pick(3) == 0) hs.listed.push_back(j);
          }
          step.heads.push_back(std::move(hs));
        }
      }
      auto u = (*stats)->SendSteps(s.id, info->epoch, {step});
      if (!u.ok()) {
        if (!Expected(u.status())) Unexpected(totals, u.status().ToString());
        stats = c.OpenStatsStream();  // a refused message ends the stream
      }
    } else if (op < 78) {  // fork: the child reads what the parent holds
      if (s.tokens == 0) continue;
      auto f = c.ForkSequence(s.id, lease->id);
      if (!f.ok()) {
        if (!Expected(f.status())) Unexpected(totals, f.status().ToString());
        continue;
      }
      Seq child = s;
      child.id = f->id;
      auto read = c.ReadKV(child.id, 0, s.layout.num_layers, 0, s.tokens);
      if (read.ok()) {
        const uint64_t bad = CheckRead(child, *read, s.tokens);
        totals.corrupt += bad;
        totals.corrupt_fork += bad;
      }
      (void)c.ReleaseSequence(child.id);
    } else if (op < 86 && s.full && s.tokens > 0) {  // UCX get of whole pages
      if (dp == nullptr) {
        auto connected = client::DataPlane::Connect(&c, lease->id, {"main", "shm"});
        if (!connected.ok()) continue;
        dp = *std::move(connected);
      }
      const uint32_t n = s.tokens - s.tokens % s.layout.page_tokens;
      if (n == 0) continue;
      const client::PageRange range{s.id, 0, s.layout.num_layers, 0, n};
      std::vector<uint8_t> buf(client::RangeBytes(range, s.layout));
      auto got = dp->Get(range, absl::MakeSpan(buf));
      if (!got.ok()) {
        if (!Expected(got.status())) Unexpected(totals, got.status().ToString());
        continue;
      }
      const uint64_t bad = CheckPages(s, buf.data(), n);
      totals.corrupt += bad;
      totals.corrupt_ucx += bad;
    } else if (op < 92 && s.full && s.tokens > 0 && !args.attach_socket.empty()) {  // attach
      if (attached == nullptr) {
        auto a = client::AttachedPool::Attach(&c, lease->id, {"main"});
        if (!a.ok()) {
          if (!Expected(a.status())) Unexpected(totals, a.status().ToString());
          continue;
        }
        attached = *std::move(a);
      }
      const uint32_t n = s.tokens - s.tokens % s.layout.page_tokens;
      if (n == 0) continue;
      auto m = attached->Map({s.id, 0, s.layout.num_layers, 0, n});
      if (!m.ok()) {
        if (!Expected(m.status())) Unexpected(totals, m.status().ToString());
        continue;
      }
      const size_t page_bytes = client::PageBytes(s.layout);
      const uint32_t pages = n / s.layout.page_tokens;
      std::vector<uint8_t> buf(size_t{s.layout.num_layers} * pages * page_bytes);
      for (uint32_t layer = 0; layer < s.layout.num_layers; ++layer) {
        for (uint32_t p = 0; p < pages; ++p) {
          std::memcpy(buf.data() + (size_t{layer} * pages + p) * page_bytes, (*m)->page(layer, p), page_bytes);
        }
      }
      const uint64_t bad = CheckPages(s, buf.data(), n);
      totals.corrupt += bad;
      totals.corrupt_attach += bad;
    } else if (op >= 95) {  // release
      (void)c.ReleaseSequence(s.id);
      s = seqs.back();
      seqs.pop_back();
    }
  }
  for (const Seq& s : seqs) (void)c.ReleaseSequence(s.id);
}

// A ReadKV stream read one message every 200 ms, then dropped.
void SlowReader(const WorkerArgs& args, Totals& totals) {
  auto client = Client::Connect({args.target, args.token, absl::Seconds(5)});
  if (!client.ok()) return;
  auto lease = (*client)->RegisterWorker("slow", client::Role::kBoth, 1000);
  if (!lease.ok()) return;
  client::LeaseKeeper keeper(client->get(), *lease);
  auto seq = (*client)->CreateSequence(lease->id, "main", 256);
  if (!seq.ok() || !(*client)->ReserveSlots(seq->id, 256).ok()) return;
  auto channel = grpc::CreateChannel(args.target, grpc::InsecureChannelCredentials());
  auto stub = v1::ControlService::NewStub(channel);
  while (absl::Now() < args.until) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + args.token);
    v1::ReadKVRequest req;
    req.set_sequence_id(seq->id);
    req.set_layer_count(seq->layout.num_layers);
    auto reader = stub->ReadKV(&ctx, req);
    v1::ReadKVResponse msg;
    for (int i = 0; i < 5 && absl::Now() < args.until && reader->Read(&msg); ++i) {
      ++totals.ops;
      absl::SleepFor(absl::Milliseconds(200));
    }
    ctx.TryCancel();
    (void)reader->Finish();
  }
  (void)(*client)->ReleaseSequence(seq->id);
}

// The attacker: issue 9's patterns against its own sequences, in a loop. Any answer
// outside the documented refusals, or a daemon that stops answering, is a finding.
void Attacker(const WorkerArgs& args, int index, Totals& totals) {
  std::mt19937_64 rng(args.seed * 7919 + index);
  auto channel = grpc::CreateChannel(args.target, grpc::InsecureChannelCredentials());
  auto control = v1::ControlService::NewStub(channel);
  auto transfer = v1::TransferService::NewStub(channel);
  auto ctx = [&](int ms) {
    auto c = std::make_unique<grpc::ClientContext>();
    c->AddMetadata("authorization", "Bearer " + args.token);
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
    return c;
  };
  auto check = [&](const grpc::Status& s, const char* what) {
    if (s.error_code() == grpc::StatusCode::UNKNOWN || s.error_code() == grpc::StatusCode::INTERNAL ||
        s.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      Unexpected(totals, absl::StrCat("attacker ", what, ": ", s.error_code(), " ", s.error_message()));
    }
  };
  v1::RegisterWorkerRequest reg;
  reg.set_name("mallory");
  reg.set_role(v1::WORKER_ROLE_BOTH);
  reg.set_ttl_ms(1000);
  v1::RegisterWorkerResponse lease;
  uint64_t seq = 0;
  absl::Time renewed = absl::InfinitePast();
  while (absl::Now() < args.until) {
    ++totals.ops;
    if (absl::Now() - renewed > absl::Milliseconds(300)) {  // keep (or renew) the lease
      v1::KeepAliveRequest keep;
      keep.set_lease_id(lease.lease_id());
      v1::KeepAliveResponse kept;
      if (!control->KeepAlive(ctx(1000).get(), keep, &kept).ok()) {
        check(control->RegisterWorker(ctx(1000).get(), reg, &lease), "register");
        seq = 0;
      }
      renewed = absl::Now();
    }
    if (seq == 0) {
      v1::CreateSequenceRequest create;
      create.set_lease_id(lease.lease_id());
      create.set_pool("main");
      create.set_max_tokens(64);
      create.mutable_policy()->mutable_scissorhands()->set_budget(8);
      create.mutable_policy()->mutable_scissorhands()->set_recent(2);
      v1::CreateSequenceResponse created;
      if (control->CreateSequence(ctx(1000).get(), create, &created).ok()) seq = created.sequence_id();
      v1::ReserveSlotsRequest reserve;
      reserve.set_sequence_id(seq);
      reserve.set_num_tokens(8);
      v1::ReserveSlotsResponse reserved;
      (void)control->ReserveSlots(ctx(1000).get(), reserve, &reserved);
    }
    switch (rng() % 6) {
      case 0: {  // stats naming epoch 2^64 - 1 (crashed the daemon)
        auto c = ctx(1000);
        auto stream = control->StreamStats(c.get());
        v1::StatsMessage m;
        m.set_sequence_id(seq);
        m.set_epoch(~uint64_t{0});
        stream->Write(m);
        stream->WritesDone();
        v1::RetentionUpdate u;
        while (stream->Read(&u)) {
        }
        check(stream->Finish(), "stats epoch");
        break;
      }
      case 1: {  // policies that overflow 32 bits
        v1::CreateSequenceRequest create;
        create.set_lease_id(lease.lease_id());
        create.set_pool("main");
        create.set_max_tokens(64);
        create.mutable_policy()->mutable_scissorhands()->set_budget(100);
        create.mutable_policy()->mutable_scissorhands()->set_sinks(4294967286u);
        create.mutable_policy()->mutable_scissorhands()->set_recent(20);
        v1::CreateSequenceResponse created;
        check(control->CreateSequence(ctx(1000).get(), create, &created), "policy overflow");
        break;
      }
      case 2: {  // a write transfer held while forks pile up (parked, never a thread)
        v1::BeginTransferRequest begin;
        begin.set_lease_id(lease.lease_id());
        begin.set_sequence_id(seq);
        begin.set_layer_count(1);
        begin.set_slot_end(8);
        begin.set_mode(v1::TRANSFER_MODE_WRITE);
        begin.set_ttl_ms(2000);
        v1::TransferGrant grant;
        if (!transfer->BeginTransfer(ctx(1000).get(), begin, &grant).ok()) break;
        std::vector<std::thread> forks;
        for (int i = 0; i < 8; ++i) {
          forks.emplace_back([&] {
            v1::ForkSequenceRequest fork;
            fork.set_sequence_id(seq);
            fork.set_lease_id(lease.lease_id());
            v1::ForkSequenceResponse forked;
            check(control->ForkSequence(ctx(300).get(), fork, &forked), "fork under write");
          });
        }
        for (auto& t : forks) t.join();
        v1::EndTransferRequest end;
        end.set_transfer_id(grant.transfer_id());
        v1::EndTransferResponse ended;
        (void)transfer->EndTransfer(ctx(1000).get(), end, &ended);
        break;
      }
      case 3: {  // attach requests never read
        if (args.attach_socket.empty()) break;
        UniqueFd sock(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, args.attach_socket.data(), args.attach_socket.size());
        if (connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) break;
        v1::AttachRequest req;
        req.set_token(args.token);
        req.set_lease_id(lease.lease_id());
        req.set_pool("main");
        const std::string bytes = req.SerializeAsString();
        for (int i = 0; i < 600; ++i) {
          if (send(sock.get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EAGAIN) break;
        }
        break;
      }
      case 4: {  // streams opened and never read
        std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
        std::vector<std::unique_ptr<grpc::ClientReader<v1::ReadKVResponse>>> readers;
        for (int i = 0; i < 80; ++i) {
          ctxs.push_back(ctx(2000));
          v1::ReadKVRequest read;
          read.set_sequence_id(seq);
          read.set_layer_count(1);
          readers.push_back(control->ReadKV(ctxs.back().get(), read));
        }
        absl::SleepFor(absl::Milliseconds(300));
        for (auto& c : ctxs) c->TryCancel();
        for (auto& r : readers) check(r->Finish(), "unread streams");
        break;
      }
      case 5: {  // sequences up to the limit, then released
        std::vector<uint64_t> made;
        for (int i = 0; i < 300; ++i) {
          v1::CreateSequenceRequest create;
          create.set_lease_id(lease.lease_id());
          create.set_pool("main");
          create.set_max_tokens(16);
          v1::CreateSequenceResponse created;
          grpc::Status s = control->CreateSequence(ctx(1000).get(), create, &created);
          check(s, "many sequences");
          if (!s.ok()) break;
          made.push_back(created.sequence_id());
        }
        for (uint64_t id : made) {
          v1::ReleaseSequenceRequest release;
          release.set_sequence_id(id);
          v1::ReleaseSequenceResponse released;
          (void)control->ReleaseSequence(ctx(1000).get(), release, &released);
        }
        break;
      }
    }
  }
}

}  // namespace

int RunWorker(const WorkerArgs& args) {
  Totals totals;
  std::vector<std::thread> threads;
  for (int i = 0; i < args.threads; ++i) {
    threads.emplace_back([&, i] {
      if (args.attacker) {
        Attacker(args, i, totals);
      } else if (i == 0) {
        SlowReader(args, totals);
      } else {
        GoodClient(args, i, totals);
      }
    });
  }
  for (auto& t : threads) t.join();
  if (!args.latency_file.empty()) {
    std::ofstream out(args.latency_file);
    for (uint32_t us : totals.reserve_us) out << us << "\n";
  }
  std::printf("REPORT ops=%llu corrupt=%llu read=%llu fork=%llu ucx=%llu attach=%llu unexpected=%llu first=%s\n",
              static_cast<unsigned long long>(totals.ops.load()),
              static_cast<unsigned long long>(totals.corrupt.load()),
              static_cast<unsigned long long>(totals.corrupt_read.load()),
              static_cast<unsigned long long>(totals.corrupt_fork.load()),
              static_cast<unsigned long long>(totals.corrupt_ucx.load()),
              static_cast<unsigned long long>(totals.corrupt_attach.load()),
              static_cast<unsigned long long>(totals.unexpected.load()),
              totals.first_unexpected.empty() ? "-" : totals.first_unexpected.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace kvwarden::soak
