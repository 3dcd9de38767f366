// bench_stats: attention-statistics ingest of the real daemon over StreamStats.
//   - slot ids per second sustained from 8 concurrent streams (one sequence each,
//     32 layers x 8 heads x 4096 live slots, ~5% of slots listed per step, 4 steps per
//     message), next to the empty-RPC rate (Ping) on the same daemon in the same run;
//   - wire bytes per decode step of a 32-layer x 8-head model at 4k context.
// Usage: bench_stats [seconds=3] [streams=8] [device=cpu]   (device "cuda:0": the pool,
// and so the Scissorhands history and its kernels, on the GPU)

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"
#include "kvwarden/v1/control.grpc.pb.h"
#include "tests/support/process.h"

namespace kvwarden {
namespace {

constexpr uint32_t kLayers = 32, kHeads = 8, kContext = 4096, kStepsPerMessage = 4;

// 8 GiB: the KV of 8 streams' 4k contexts (4 GiB) with room to spare.
std::string Config(const std::string& device) {
  return R"pb(
  admin_token: "bench-admin"
  pools {
    name: "main"
    device: ")pb" + device + R"pb("
    layout { num_layers: 32 num_kv_heads: 8 head_dim: 128 dtype: DTYPE_FP16 page_tokens: 16 }
    capacity_bytes: 8589934592
    chunk_bytes: 67108864
  }
  tenants { name: "bench" token: "bench-token" quota_bytes: 8589934592 }
  data_plane { disable_ucx: true }
)pb";
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->AddMetadata("authorization", "Bearer bench-token");
  return ctx;
}

v1::DecodeStep MakeStep(std::mt19937& rng, uint64_t* ids) {
  v1::DecodeStep step;
  for (uint32_t l = 0; l < kLayers; ++l) {
    for (uint32_t h = 0; h < kHeads; ++h) {
      v1::HeadStats* hs = step.add_heads();
      hs->set_layer(l);
      hs->set_head(h);
      hs->set_attended(kContext);
      for (uint32_t j = 0; j < kContext; ++j) {
        if (rng() % 20 == 0) hs->add_listed(j);
      }
      *ids += hs->listed_size();
    }
  }
  return step;
}

}  // namespace
}  // namespace kvwarden

int main(int argc, char** argv) {
  using namespace kvwarden;
  const double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  const int streams = argc > 2 ? std::atoi(argv[2]) : 8;
  const std::string device = argc > 3 ? argv[3] : "cpu";
  auto daemon = testing::DaemonProcess::Start(Config(device));
  if (!daemon.ok()) {
    std::fprintf(stderr, "bench_stats: %s\n", daemon.status().ToString().c_str());
    return 1;
  }
  auto channel_for = [&] {
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);  // one connection per stream
    return grpc::CreateCustomChannel((*daemon)->target(), grpc::InsecureChannelCredentials(), args);
  };
  // Wire size of one decode step.
  std::mt19937 rng(7);
  uint64_t ids_per_step = 0;
  const v1::DecodeStep sample = MakeStep(rng, &ids_per_step);
  std::printf("one decode step, %u layers x %u heads at %u context, ~5%% listed: %llu ids, %zu wire bytes "
              "(%.2f bytes/id; KV of one token is %u bytes)\n",
              kLayers, kHeads, kContext, static_cast<unsigned long long>(ids_per_step), sample.ByteSizeLong(),
              static_cast<double>(sample.ByteSizeLong()) / ids_per_step, kLayers * kHeads * 128 * 2 * 2);

  // Reference: empty unary RPCs per second from the same number of threads.
  std::atomic<uint64_t> pings{0};
  {
    std::vector<std::thread> threads;
    const absl::Time end = absl::Now() + absl::Seconds(seconds / 3);
    for (int t = 0; t < streams; ++t) {
      threads.emplace_back([&] {
        auto stub = v1::ControlService::NewStub(channel_for());
        v1::PingResponse resp;
        while (absl::Now() < end) {
          auto ctx = Ctx();
          if (stub->Ping(ctx.get(), {}, &resp).ok()) ++pings;
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  const double ping_rate = pings / (seconds / 3);

  std::atomic<uint64_t> ids{0}, messages{0}, wire{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  absl::Time start, end;
  std::atomic<int> ready{0};
  for (int t = 0; t < streams; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::ControlService::NewStub(channel_for());
      v1::RegisterWorkerRequest reg;
      reg.set_role(v1::WORKER_ROLE_DECODE);
      reg.set_ttl_ms(300000);
      v1::RegisterWorkerResponse lease;
      v1::CreateSequenceRequest create;
      v1::CreateSequenceResponse seq;
      v1::ReserveSlotsRequest reserve;
      v1::ReserveSlotsResponse slots;
      if (!stub->RegisterWorker(Ctx().get(), reg, &lease).ok()) return void(++failures);
      create.set_lease_id(lease.lease_id());
      create.set_pool("main");
      create.set_max_tokens(kContext);
      create.mutable_policy()->mutable_scissorhands()->set_budget(kContext);  // never over budget
      if (!stub->CreateSequence(Ctx().get(), create, &seq).ok()) return void(++failures);
      reserve.set_sequence_id(seq.sequence_id());
      reserve.set_num_tokens(kContext);
      if (!stub->ReserveSlots(Ctx().get(), reserve, &slots).ok()) return void(++failures);
      std::mt19937 r(100 + t);
      v1::StatsMessage msg;
      msg.set_sequence_id(seq.sequence_id());
      uint64_t per_message = 0;
      for (uint32_t s = 0; s < kStepsPerMessage; ++s) *msg.add_steps() = MakeStep(r, &per_message);
      const size_t bytes = msg.ByteSizeLong();
      // Serialized once, written as raw bytes: the workers' cost of encoding (~10% of
      // this machine's two cores, shared with the daemon) is not the daemon's ingest.
      const std::string encoded = msg.SerializeAsString();
      grpc::Slice slice(encoded);
      const grpc::ByteBuffer wire_message(&slice, 1);
      const auto channel = channel_for();
      const grpc::internal::RpcMethod method("/kvwarden.v1.ControlService/StreamStats",
                                             grpc::internal::RpcMethod::BIDI_STREAMING, channel);
      auto ctx = Ctx();
      std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, v1::RetentionUpdate>> stream(
          grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, v1::RetentionUpdate>::Create(
              channel.get(), method, ctx.get()));
      v1::RetentionUpdate update;
      ++ready;
      while (ready < streams) std::this_thread::yield();
      if (t == 0) start = absl::Now();
      const absl::Time stop = absl::Now() + absl::Seconds(seconds);
      while (absl::Now() < stop) {
        if (!stream->Write(wire_message) || !stream->Read(&update)) {
          ++failures;
          break;
        }
        ids += per_message;
        wire += bytes;
        ++messages;
      }
      stream->WritesDone();
      (void)stream->Finish();
      if (t == 0) end = absl::Now();
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = absl::ToDoubleSeconds(end - start);
  std::printf("\n== bench_stats summary (%d streams, %.1f s, pool on %s)\n", streams, elapsed, device.c_str());
  std::printf("stats ingest: %.1f M slot ids/s (goal >= 100 M), %.0f messages/s of %u steps, %.0f MB/s on the wire\n",
              ids / elapsed / 1e6, messages / elapsed, kStepsPerMessage, wire / elapsed / 1e6);
  std::printf("reference: %.0f empty RPCs/s from %d threads on the same daemon\n", ping_rate, streams);
  std::printf("row|bench_stats|stats ingest, %d streams, pool on %s|%.1f M ids/s|%.0f empty RPCs/s|%.0f ids per RPC|"
              ">= 100 M ids/s\n",
              streams, device.c_str(), ids / elapsed / 1e6, ping_rate, ids / elapsed / ping_rate);
  std::printf("decode steps/s per stream: %.0f\n", messages * kStepsPerMessage / elapsed / streams);
  if (failures) std::printf("failures: %d\n", failures.load());
  return failures ? 1 : 0;
}
