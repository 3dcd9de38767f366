// Retention end to end: the real daemon, the client's StreamStats stream, ReadKV after
// compaction. The hand-worked examples of POLICIES.md on every (layer, head), a 2,000-step
// decode under Scissorhands B=256 next to a full sequence, stream error handling, and a
// random decode run on pool "main" and a cpu pool "host" side by side, which must agree
// bit for bit.
//
// Built twice: retention_e2e_test (label integration) with "main" on the cpu, and
// retention_e2e_cuda_test (label gpu, KVW_E2E_CUDA_POOL) with "main" on cuda:0, so
// Scissorhands history, selection, WindowKV and compaction run on the device; it skips
// when no CUDA device is visible.

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/copy_kv.h"
#include "kvwarden/client.h"
#include "tests/support/kv_pattern.h"
#include "tests/support/policy_examples.h"
#include "tests/support/process.h"
#include "tests/support/test_config.h"

namespace kvwarden {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::PatternKv;

#if defined(KVW_E2E_CUDA_POOL)
constexpr const char* kMainDevice = "device: \"cuda:0\"";
#else
constexpr const char* kMainDevice = "";
#endif

// The test daemon's config with "main" on kMainDevice and a cpu twin "host".
std::string E2eConfig() {
  const std::string main_pool = absl::StrCat(R"pb(pools { name: "main"
                                             )pb",
                                             kMainDevice, R"pb(
    layout { num_layers: 4 num_kv_heads: 2 head_dim: 16 dtype: DTYPE_FP16 page_tokens: 4 }
    capacity_pages: 8192
    chunk_bytes: 2097152
  }
        pools {
    name: "host"
    layout { num_layers: 4 num_kv_heads: 2 head_dim: 16 dtype: DTYPE_FP16 page_tokens: 4 }
    capacity_pages: 8192
    chunk_bytes: 32768
  })pb");
  return absl::StrCat(R"pb(
                        admin_token: "test-admin"
                      )pb",
                      main_pool, R"pb(
    tenants { name: "alpha" token: "alpha-token" quota_pages: 12288 }
    tenants { name: "beta" token: "beta-token" quota_pages: 64 }
    leases { default_ttl_ms: 5000 min_ttl_ms: 100 max_ttl_ms: 60000 reap_interval_ms: 20 }
    data_plane { disable_ucx: true }
  )pb");
}

class RetentionE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto d = testing::DaemonProcess::Start(E2eConfig());
#if defined(KVW_E2E_CUDA_POOL)
    // Skip only where no device exists: with one, a daemon that cannot start its cuda
    // pool (library, driver, config) is a failure, never a pass.
    if (!d.ok() && !kernels::CudaDeviceAvailable()) {
      skip_ = std::string(d.status().message());
      return;
    }
#endif
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = d->release();
  }
  static void TearDownTestSuite() { delete daemon_; }
  void SetUp() override {
    if (daemon_ == nullptr) GTEST_SKIP() << skip_;
    client_ = *Client::Connect({daemon_->target(), testing::kAlphaToken, absl::Seconds(10)});
    lease_ = *client_->RegisterWorker("retention", client::Role::kDecode, 60000);
  }

  // Reserves n tokens and writes PatternKv(tag, ...) to them (tag: the sequence id by default).
  void ReserveAndWrite(const client::Sequence& seq, uint32_t first, uint32_t n, uint64_t tag = 0) {
    auto r = client_->ReserveSlots(seq.id, n);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->first_position, first);
    const auto& l = seq.layout;
    if (tag == 0) tag = seq.id;
    std::string k, v;
    for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
      k += PatternKv(tag, layer, l.num_kv_heads, first, n, l.token_bytes(), false);
      v += PatternKv(tag, layer, l.num_kv_heads, first, n, l.token_bytes(), true);
    }
    ASSERT_TRUE(client_
                    ->WriteKV(seq.id, l, 0, l.num_layers, first, n,
                              {reinterpret_cast<const uint8_t*>(k.data()), k.size()},
                              {reinterpret_cast<const uint8_t*>(v.data()), v.size()})
                    .ok());
  }

  // Reads every layer at `epoch` and checks each live slot's K and V bytes against what
  // was written at its position; returns head 0 of layer 0's positions.
  std::vector<uint32_t> CheckKeptBytes(const client::Sequence& seq, uint64_t epoch) {
    const auto& l = seq.layout;
    auto read = client_->ReadKV(seq.id, 0, l.num_layers, 0, 0, epoch);
    EXPECT_TRUE(read.ok()) << read.status();
    if (!read.ok()) return {};
    const size_t tb = l.token_bytes();
    std::vector<uint32_t> first_head;
    for (const client::LayerKv& kv : *read) {
      size_t slot = 0;
      for (uint32_t h = 0; h < l.num_kv_heads; ++h) {
        for (uint32_t i = 0; i < kv.head_live_counts[h]; ++i, ++slot) {
          const uint32_t pos = kv.positions.empty() ? i : kv.positions[slot];
          if (kv.layer == 0 && h == 0) first_head.push_back(pos);
          const std::string k = PatternKv(seq.id, kv.layer, l.num_kv_heads, pos, 1, tb, false);
          const std::string v = PatternKv(seq.id, kv.layer, l.num_kv_heads, pos, 1, tb, true);
          EXPECT_EQ(kv.k.substr(slot * tb, tb), k.substr(h * tb, tb))
              << "layer " << kv.layer << " head " << h << " pos " << pos;
          EXPECT_EQ(kv.v.substr(slot * tb, tb), v.substr(h * tb, tb));
        }
      }
    }
    return first_head;
  }

  static testing::DaemonProcess* daemon_;
  static std::string skip_;
  std::unique_ptr<Client> client_;
  client::Lease lease_;
};

testing::DaemonProcess* RetentionE2eTest::daemon_ = nullptr;
std::string RetentionE2eTest::skip_;

TEST_F(RetentionE2eTest, ScissorhandsHandWorkedExampleOnEveryHead) {
  auto ex = testing::MakeScissorhandsExample();
  client::Policy policy = client::Policy::Scissorhands(6);
  policy.recent = 2;
  policy.window = 3;
  policy.drop = 3;
  auto seq = client_->CreateSequence(lease_.id, "main", 100, policy);
  ASSERT_TRUE(seq.ok()) << seq.status();
  auto stream = *client_->OpenStatsStream();
  uint32_t reserved = 0;
  client::RetentionUpdate update;
  for (const auto& step : ex.steps) {
    ReserveAndWrite(*seq, reserved, step.attended - reserved);
    reserved = step.attended;
    client::DecodeStep s;
    for (uint32_t layer = 0; layer < 4; ++layer) {
      for (uint32_t h = 0; h < 2; ++h)
        s.heads.push_back({layer, h, step.attended, step.listed, {}});
    }
    auto u = stream->SendSteps(seq->id, update.epoch, {s});
    ASSERT_TRUE(u.ok()) << u.status();
    update = *u;
  }
  EXPECT_EQ(update.epoch, 1u);
  ASSERT_EQ(update.heads.size(), 8u);
  for (const auto& h : update.heads) EXPECT_THAT(h.evicted_positions, ElementsAre(1, 3, 4));
  EXPECT_THAT(CheckKeptBytes(*seq, 1), ElementsAre(0, 2, 5, 6));
  EXPECT_EQ(client_->ReadKV(seq->id, 0, 1, 0, 0, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto info = client_->DescribeSequence(seq->id);
  EXPECT_EQ(info->policy, "scissorhands");
  EXPECT_THAT(info->policy_summary, HasSubstr("B=6 w=3 r=2 m=3"));
  EXPECT_EQ(info->heads[2][1].evicted, 3u);
  EXPECT_EQ(info->heads[2][1].live_slots, 4u);
  EXPECT_TRUE(stream->Close().ok());
  ASSERT_TRUE(client_->ReleaseSequence(seq->id).ok());
}

TEST_F(RetentionE2eTest, WindowKvHandWorkedExample) {
  auto ex = testing::MakeWindowKvExample();
  for (uint32_t top_p : {4u, 2u}) {
    client::Policy policy = client::Policy::WindowKv(ex.budget);  // one group of 4 layers
    policy.alpha = ex.alpha;
    policy.omega = ex.omega;
    policy.top_p = top_p;
    policy.gamma = 4;
    auto seq = client_->CreateSequence(lease_.id, "main", 64, policy);
    ASSERT_TRUE(seq.ok()) << seq.status();
    ReserveAndWrite(*seq, 0, ex.n);
    std::vector<float> sums = ex.t;  // two heads with the same sums: same mean
    sums.insert(sums.end(), ex.t.begin(), ex.t.end());
    auto stream = *client_->OpenStatsStream();
    auto u = stream->SendWindowScores(seq->id, 0, {{0, sums}});
    ASSERT_TRUE(u.ok()) << u.status();
    EXPECT_EQ(u->epoch, 1u);
    EXPECT_EQ(u->heads.size(), 8u);  // every head of every layer in the group
    const std::vector<uint32_t> want =
        top_p == 4 ? std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19}
                   : std::vector<uint32_t>{0, 1, 2, 3, 12, 13, 14, 15, 16, 17, 18, 19};
    EXPECT_EQ(CheckKeptBytes(*seq, 1), want);
    ASSERT_TRUE(client_->ReleaseSequence(seq->id).ok());
  }
}

TEST_F(RetentionE2eTest, BadStatisticsEndTheStreamAndChangeNothing) {
  auto seq = client_->CreateSequence(lease_.id, "main", 64, client::Policy::Scissorhands(16));
  ASSERT_TRUE(seq.ok());
  ReserveAndWrite(*seq, 0, 12);
  auto all_heads = [](uint32_t attended, std::vector<uint32_t> listed) {
    client::DecodeStep s;
    for (uint32_t layer = 0; layer < 4; ++layer) {
      for (uint32_t h = 0; h < 2; ++h) s.heads.push_back({layer, h, attended, listed, {}});
    }
    return s;
  };
  struct Case {
    client::DecodeStep step;
    uint64_t epoch;
    absl::StatusCode code;
  };
  client::DecodeStep missing = all_heads(12, {});
  missing.heads.pop_back();
  client::DecodeStep unknown_layer = all_heads(12, {});
  unknown_layer.heads[0].layer = 9;
  client::DecodeStep nan = all_heads(2, {});
  nan.heads[3].dense = {0.5f, NAN};
  for (const Case& c : {Case{all_heads(12, {12}), 0, absl::StatusCode::kOutOfRange},
                        Case{all_heads(13, {}), 0, absl::StatusCode::kInvalidArgument},
                        Case{missing, 0, absl::StatusCode::kInvalidArgument},
                        Case{unknown_layer, 0, absl::StatusCode::kInvalidArgument},
                        Case{nan, 0, absl::StatusCode::kInvalidArgument},
                        Case{all_heads(12, {1}), 5, absl::StatusCode::kFailedPrecondition}}) {
    auto stream = *client_->OpenStatsStream();
    auto u = stream->SendSteps(seq->id, c.epoch, {c.step});
    EXPECT_EQ(u.status().code(), c.code) << u.status();
    EXPECT_FALSE(stream->SendSteps(seq->id, 0, {all_heads(12, {})}).ok())
        << "stream must be closed";
  }
  auto other = *Client::Connect({daemon_->target(), testing::kBetaToken, absl::Seconds(10)});
  auto theirs = (*other->OpenStatsStream())->SendSteps(seq->id, 0, {all_heads(12, {})});
  EXPECT_EQ(theirs.status().code(), absl::StatusCode::kNotFound);
  // A stream dropped mid-way (no Close) harms nothing.
  { auto dropped = *client_->OpenStatsStream(); }
  auto info = client_->DescribeSequence(seq->id);
  EXPECT_EQ(info->decode_steps, 0u);
  EXPECT_EQ(info->epoch, 0u);
  EXPECT_EQ(info->heads[0][0].live_slots, 12u);
  CheckKeptBytes(*seq, 0);
  ASSERT_TRUE(client_->ReleaseSequence(seq->id).ok());
}

// A decode loop with a synthetic attention generator: every 7th position is a heavy
// hitter, the newest few tokens get attention, and 2% of the rest at random.
TEST_F(RetentionE2eTest, TwoThousandStepDecodeStaysBoundedWhileFullGrows) {
  constexpr uint32_t kBudget = 256, kPrompt = 64, kSteps = 2000;
  auto sh = client_->CreateSequence(lease_.id, "main", kPrompt + kSteps,
                                    client::Policy::Scissorhands(kBudget));
  auto full = client_->CreateSequence(lease_.id, "main", kPrompt + kSteps, client::Policy::Full());
  ASSERT_TRUE(sh.ok() && full.ok());
  ReserveAndWrite(*sh, 0, kPrompt);
  ReserveAndWrite(*full, 0, kPrompt);
  auto stream = *client_->OpenStatsStream();
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  uint64_t epoch = 0;
  uint32_t max_pages = 0;
  // live positions per head (the worker's own view, kept in step with the updates)
  std::vector<std::vector<uint32_t>> live(8);
  for (auto& l : live) {
    for (uint32_t p = 0; p < kPrompt; ++p) l.push_back(p);
  }
  for (uint32_t step = 0; step < kSteps; ++step) {
    const uint32_t pos = kPrompt + step;
    ReserveAndWrite(*sh, pos, 1);
    ReserveAndWrite(*full, pos, 1);
    client::DecodeStep s;
    for (uint32_t lh = 0; lh < 8; ++lh) {
      live[lh].push_back(pos);
      client::HeadStats hs{lh / 2, lh % 2, static_cast<uint32_t>(live[lh].size()), {}, {}};
      for (uint32_t j = 0; j < live[lh].size(); ++j) {
        const uint32_t p = live[lh][j];
        if (p % 7 == 0 || p + 4 > pos || rng() % 50 == 0) hs.listed.push_back(j);
      }
      s.heads.push_back(std::move(hs));
    }
    auto u = stream->SendSteps(sh->id, epoch, {s});
    ASSERT_TRUE(u.ok()) << "step " << step << ": " << u.status();
    epoch = u->epoch;
    for (const auto& h : u->heads) {
      auto& l = live[h.layer * 2 + h.head];
      for (uint32_t gone : h.evicted_positions) l.erase(std::find(l.begin(), l.end(), gone));
      ASSERT_EQ(l.size(), h.live_slots);
      ASSERT_LE(h.live_slots, kBudget);
    }
    if (step % 100 == 99) {
      max_pages = std::max(max_pages, client_->DescribeSequence(sh->id)->pages_held);
      // A worker renews its lease as it goes; slow builds (sanitizers, the CUDA
      // emulator) take longer than one lease TTL for the whole loop.
      ASSERT_TRUE(client_->KeepAlive(lease_.id).ok());
    }
  }
  auto sh_info = *client_->DescribeSequence(sh->id);
  auto full_info = *client_->DescribeSequence(full->id);
  EXPECT_EQ(full_info.pages_held, 4u * (kPrompt + kSteps) / 4);  // grows with every token
  EXPECT_LE(max_pages, 4u * kBudget / 4 + 4);                    // bounded by the budget
  EXPECT_LT(sh_info.pages_held * 5, full_info.pages_held);
  std::printf("after %u steps: scissorhands holds %u pages (peak %u), full %u; epoch %llu\n",
              kSteps, sh_info.pages_held, max_pages, full_info.pages_held,
              static_cast<unsigned long long>(epoch));
  // Bytes of every kept token read back unchanged; positions match the worker's view.
  const std::vector<uint32_t> kept = CheckKeptBytes(*sh, epoch);
  EXPECT_EQ(kept, live[0]);
  // Heavy hitters survive: most kept old tokens are multiples of 7.
  uint32_t old = 0, heavy = 0;
  for (uint32_t p : kept) {
    if (p + 50 < kPrompt + kSteps) {
      ++old;
      heavy += p % 7 == 0;
    }
  }
  EXPECT_GT(heavy * 10, old * 8) << heavy << " of " << old << " old survivors are heavy hitters";
  EXPECT_TRUE(stream->Close().ok());
  ASSERT_TRUE(client_->ReleaseSequence(sh->id).ok());
  ASSERT_TRUE(client_->ReleaseSequence(full->id).ok());
}

// The same random decode (Scissorhands: record, select, compaction; then a WindowKV
// selection) on "main" and on the cpu pool "host": every update and every byte read
// back must be identical. With KVW_E2E_CUDA_POOL this is the GPU path against the CPU's.
TEST_F(RetentionE2eTest, MainPoolAgreesWithTheCpuPoolBitForBit) {
  constexpr uint32_t kPrompt = 40, kSteps = 300;
  client::Policy sh_policy = client::Policy::Scissorhands(24);
  sh_policy.window = 40;
  sh_policy.recent = 4;
  sh_policy.drop = 5;
  std::vector<client::Sequence> seqs;
  for (const char* pool : {"main", "host"}) {
    auto seq = client_->CreateSequence(lease_.id, pool, kPrompt + kSteps, sh_policy);
    ASSERT_TRUE(seq.ok()) << seq.status();
    seqs.push_back(*seq);
    ReserveAndWrite(*seq, 0, kPrompt, /*tag=*/77);
  }
  auto stream = *client_->OpenStatsStream();
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  std::vector<uint32_t> live(8, kPrompt);
  uint64_t epoch = 0;
  for (uint32_t step = 0; step < kSteps; ++step) {
    client::DecodeStep s;
    for (uint32_t lh = 0; lh < 8; ++lh) {
      ++live[lh];
      client::HeadStats hs{lh / 2, lh % 2, live[lh], {}, {}};
      for (uint32_t j = 0; j < live[lh]; ++j) {
        if (rng() % 5 == 0) hs.listed.push_back(j);
      }
      s.heads.push_back(std::move(hs));
    }
    std::vector<client::RetentionUpdate> updates;
    for (const client::Sequence& seq : seqs) {
      ReserveAndWrite(seq, kPrompt + step, 1, 77);
      auto u = stream->SendSteps(seq.id, epoch, {s});
      ASSERT_TRUE(u.ok()) << "sequence " << seq.id << " step " << step << ": " << u.status();
      updates.push_back(*u);
    }
    ASSERT_EQ(updates[0].epoch, updates[1].epoch) << "step " << step;
    ASSERT_EQ(updates[0].heads.size(), updates[1].heads.size()) << "step " << step;
    for (size_t i = 0; i < updates[0].heads.size(); ++i) {
      const auto& a = updates[0].heads[i];
      const auto& b = updates[1].heads[i];
      ASSERT_EQ(a.layer, b.layer);
      ASSERT_EQ(a.head, b.head);
      ASSERT_EQ(a.evicted_positions, b.evicted_positions) << "step " << step;
      live[a.layer * 2 + a.head] = a.live_slots;
    }
    epoch = updates[0].epoch;
  }
  auto read_all = [&](const client::Sequence& seq, uint64_t at) {
    auto r = client_->ReadKV(seq.id, 0, 4, 0, 0, at);
    EXPECT_TRUE(r.ok()) << r.status();
    std::string bytes;
    if (!r.ok()) return bytes;
    for (const client::LayerKv& kv : *r) {
      bytes += kv.k + kv.v;
      for (uint32_t p : kv.positions) bytes += absl::StrCat(p, ",");
    }
    return bytes;
  };
  EXPECT_EQ(read_all(seqs[0], epoch), read_all(seqs[1], epoch));
  auto a = client_->DescribeSequence(seqs[0].id);
  auto b = client_->DescribeSequence(seqs[1].id);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_GT(a->epoch, 5u);
  EXPECT_EQ(a->decode_steps, b->decode_steps);
  for (size_t l = 0; l < a->heads.size(); ++l) {
    for (size_t h = 0; h < a->heads[l].size(); ++h) {
      ASSERT_TRUE(a->heads[l][h].Figure("low_max").has_value());
      EXPECT_EQ(a->heads[l][h].figures, b->heads[l][h].figures);  // history read from the device
    }
  }
  // WindowKV on both: the same random scores select the same windows.
  client::Policy wkv = client::Policy::WindowKv(24);
  wkv.alpha = 4;
  wkv.omega = 4;
  wkv.top_p = 2;
  wkv.gamma = 2;
  wkv.lambda = 2;
  std::vector<std::string> kept;
  std::vector<float> sums(2 * (60 - 4));
  for (float& x : sums) x = static_cast<float>(rng() % 1000) / 997.0f;
  for (const char* pool : {"main", "host"}) {
    auto seq = client_->CreateSequence(lease_.id, pool, 64, wkv);
    ASSERT_TRUE(seq.ok()) << seq.status();
    ReserveAndWrite(*seq, 0, 60, 78);
    auto u = stream->SendWindowScores(seq->id, 0, {{0, sums}, {2, sums}});
    ASSERT_TRUE(u.ok()) << u.status();
    EXPECT_EQ(u->epoch, 1u);
    kept.push_back(read_all(*seq, 1));
  }
  EXPECT_EQ(kept[0], kept[1]);
  EXPECT_TRUE(stream->Close().ok());
}

}  // namespace
}  // namespace kvwarden
