// Writes the seed corpora under tests/fuzz/corpus/<fuzzer>/ (committed; run again when
// the protos change): valid requests for each fuzzer's paths plus the inputs that
// crashed or stalled kvwardend before (issue 9), so those stay regression seeds.
//
//   build-fuzz/bin/make_seeds tests/fuzz/corpus

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "kvwarden/v1/config.pb.h"
#include "kvwarden/v1/control.pb.h"
#include "kvwarden/v1/policy.pb.h"
#include "kvwarden/v1/transfer.pb.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using kvwarden::fuzz::Record;
namespace v1 = kvwarden::v1;

std::string g_root;

void Write(const std::string& fuzzer, const std::string& name, const std::string& bytes) {
  const std::filesystem::path dir = std::filesystem::path(g_root) / fuzzer;
  std::filesystem::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

std::string U16(uint32_t n) { return std::string{static_cast<char>(n & 0xff), static_cast<char>(n >> 8)}; }

v1::StatsMessage Step(uint64_t epoch, uint32_t attended, uint32_t layers = 4) {
  v1::StatsMessage m;
  m.set_sequence_id(1);
  m.set_epoch(epoch);
  v1::DecodeStep* step = m.add_steps();
  for (uint32_t l = 0; l < layers; ++l) {
    for (uint32_t h = 0; h < 2; ++h) {
      v1::HeadStats* hs = step->add_heads();
      hs->set_layer(l);
      hs->set_head(h);
      hs->set_attended(attended);
      hs->add_listed(0);
      hs->add_listed(attended - 1);
    }
  }
  return m;
}

void PolicyStatsSeeds() {
  v1::RetentionPolicy sh;
  sh.mutable_scissorhands()->set_budget(8);
  sh.mutable_scissorhands()->set_recent(2);
  sh.mutable_scissorhands()->set_window(8);
  std::string steps;
  for (int i = 0; i < 4; ++i) steps += Record(2, Step(0, 12).SerializeAsString());
  Write("fuzz_policy_stats", "scissorhands_steps", Record(0, sh.SerializeAsString()) + Record(1, U16(12)) + steps);
  // Issue 9, finding 1: epoch 2^64 - 1 at epoch 0 (crashed ApplyStats).
  Write("fuzz_policy_stats", "epoch_wraps",
        Record(0, sh.SerializeAsString()) + Record(1, U16(12)) + Record(2, Step(~uint64_t{0}, 12).SerializeAsString()));
  // Finding 2: sinks + recent wrapping in 32 bits (heap corruption in selection).
  v1::RetentionPolicy wrap = sh;
  wrap.mutable_scissorhands()->set_budget(100);
  wrap.mutable_scissorhands()->set_sinks(4294967286u);
  wrap.mutable_scissorhands()->set_recent(20);
  Write("fuzz_policy_stats", "sinks_wrap", Record(0, wrap.SerializeAsString()) + Record(1, U16(120)) + steps);
  v1::RetentionPolicy st;
  st.mutable_streaming()->set_budget(8);
  st.mutable_streaming()->set_sinks(2);
  Write("fuzz_policy_stats", "streaming", Record(0, st.SerializeAsString()) + Record(1, U16(6)) + Record(1, U16(6)) +
                                              Record(3, "") + Record(1, U16(4)));
  v1::RetentionPolicy wkv;
  wkv.mutable_windowkv()->set_mean_budget(12);
  wkv.mutable_windowkv()->set_alpha(2);
  wkv.mutable_windowkv()->set_omega(2);
  wkv.mutable_windowkv()->set_gamma(2);
  wkv.mutable_windowkv()->set_lambda(3);  // gamma > lambda: budgets grow with depth
  v1::StatsMessage scores;
  scores.set_sequence_id(1);
  v1::WindowScores* ws = scores.add_window_scores();
  ws->set_layer(0);
  for (int i = 0; i < 2 * 18; ++i) ws->add_sums(static_cast<float>(i % 7) / 7);
  Write("fuzz_policy_stats", "windowkv_scores",
        Record(0, wkv.SerializeAsString()) + Record(1, U16(20)) + Record(2, scores.SerializeAsString()));
}

void RpcSeeds() {
  // Tags index fuzz_rpc.cc's method table: 2 CreateSequence, 3 Fork, 6 ReserveSlots,
  // 7 WriteKV, 8 ReadKV, 9 StreamStats, 10 BeginTransfer, 11 EndTransfer.
  v1::ReserveSlotsRequest reserve;
  reserve.set_sequence_id(2);  // the scissorhands sequence
  reserve.set_num_tokens(4);
  v1::StatsMessage stats = Step(~uint64_t{0}, 20);
  stats.set_sequence_id(2);
  Write("fuzz_rpc", "stats_epoch_wraps", Record(6, reserve.SerializeAsString()) + Record(9, stats.SerializeAsString()));
  v1::BeginTransferRequest begin;
  begin.set_lease_id(1);
  begin.set_sequence_id(3);  // the full sequence
  begin.set_layer_count(1);
  begin.set_slot_end(8);
  begin.set_mode(v1::TRANSFER_MODE_WRITE);
  v1::ForkSequenceRequest fork;
  fork.set_sequence_id(3);
  fork.set_lease_id(1);
  v1::EndTransferRequest end;
  end.set_transfer_id(1);
  Write("fuzz_rpc", "fork_under_write", Record(10, begin.SerializeAsString()) + Record(3, fork.SerializeAsString()) +
                                            Record(11, end.SerializeAsString()) + Record(3, fork.SerializeAsString()));
  v1::WriteKVRequest write;
  write.set_sequence_id(3);
  write.set_num_tokens(4);
  write.set_k(std::string(2 * 4 * 4 * 2, 'k'));
  write.set_v(std::string(2 * 4 * 4 * 2, 'v'));
  v1::ReadKVRequest read;
  read.set_sequence_id(3);
  read.set_layer_count(4);
  Write("fuzz_rpc", "write_read", Record(7, write.SerializeAsString()) + Record(8, read.SerializeAsString()));
  Write("fuzz_rpc", "garbage", Record(2, "\x0f\x01\x02") + Record(7, "\x0f\x01") + Record(9, "\xff\xff"));
  v1::CreateSequenceRequest create;
  create.set_lease_id(1);
  create.set_pool("main");
  create.set_max_tokens(64);
  create.mutable_policy()->mutable_scissorhands()->set_budget(100);
  create.mutable_policy()->mutable_scissorhands()->set_sinks(4294967286u);
  create.mutable_policy()->mutable_scissorhands()->set_recent(20);
  Write("fuzz_rpc", "create_sinks_wrap", Record(2, create.SerializeAsString()));
}

void AttachSeeds() {
  v1::AttachRequest req;
  req.set_lease_id(1);  // the decode lease; empty token = alpha's
  req.set_pool("main");
  Write("fuzz_attach", "attach_decode", Record(0, req.SerializeAsString()));
  req.set_lease_id(2);
  v1::ChunkRef* known = req.add_known_chunks();
  known->set_chunk(0);
  known->set_generation(0);
  Write("fuzz_attach", "attach_prefill_known", Record(0, req.SerializeAsString()) + Record(0, req.SerializeAsString()));
  Write("fuzz_attach", "garbage", Record(0, std::string("\xff\xff\xff garbage", 11)));
  req.set_token("beta-token");
  Write("fuzz_attach", "other_tenant", Record(0, req.SerializeAsString()));
}

void ConfigSeeds() {
  Write("fuzz_config", "example", R"pb(
admin_token: "admin"
pools {
  name: "main"
  layout { num_layers: 4 num_kv_heads: 2 head_dim: 16 dtype: DTYPE_FP16 page_tokens: 4 }
  capacity_pages: 8192
  chunk_bytes: 32768
}
tenants { name: "alpha" token: "a" quota_pages: 4096 weight: 2
  default_policy { scissorhands { budget: 64 recent: 4 } } limits { max_sequences: 10 } }
tenants { name: "beta" token: "b" quota_bytes: 1048576 }
tenant_limits { max_open_streams: 8 }
leases { default_ttl_ms: 5000 min_ttl_ms: 100 max_ttl_ms: 60000 }
data_plane { ucx_transports: "shm" attach_socket: "/tmp/a.sock" max_attach_connections: 16 }
)pb");
  Write("fuzz_config", "windowkv_default", R"pb(
admin_token: "admin"
pools { name: "p" layout { num_layers: 32 num_kv_heads: 8 head_dim: 128 dtype: DTYPE_BF16 page_tokens: 16 } capacity_bytes: 1073741824 }
tenants { name: "t" token: "x" quota_pages: 1 default_policy { windowkv { mean_budget: 2048 gamma: 8 lambda: 4 } } }
)pb");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
    return 2;
  }
  g_root = argv[1];
  PolicyStatsSeeds();
  RpcSeeds();
  AttachSeeds();
  ConfigSeeds();
  return 0;
}
