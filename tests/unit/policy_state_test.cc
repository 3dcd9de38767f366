// A policy's per-sequence state written out and read back (what a sequence carries to
// another daemon or across a restart): the checked record format refuses every torn,
// flipped or foreign byte string, and a Scissorhands state after random steps and
// compactions decodes to the same history, which then evolves exactly as the original.

#include <random>
#include <string>

#include "cache_service/core/memory/pool_device.h"
#include "cache_service/retention/registry.h"
#include "cache_service/retention/scissorhands/scissorhands_policy.h"
#include "cache_service/retention/scissorhands/scissorhands_strategy.h"
#include "cache_service/retention/streaming/streaming_policy.h"
#include "common/codec/checked_record.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/policy_state_drive.h"

namespace kvwarden {
namespace {

using ::testing::HasSubstr;

TEST(CheckedRecordTest, RoundTripsAndRefusesEveryTornOrFlippedRecord) {
  RecordWriter w("TEST", 3);
  w.U32(7);
  w.U64(1ull << 40);
  w.U32s({1, 2, 3});
  const std::string rec = std::move(w).Finish();
  {
    absl::StatusOr<RecordReader> r = RecordReader::Open(rec, "TEST", 3, "test");
    ASSERT_TRUE(r.ok()) << r.status();
    uint32_t a = 0;
    uint64_t b = 0;
    std::vector<uint32_t> c;
    EXPECT_TRUE(r->U32(&a) && r->U64(&b) && r->U32s(&c, 10));
    EXPECT_TRUE(r->Done().ok());
    EXPECT_EQ(a, 7u);
    EXPECT_EQ(b, 1ull << 40);
    EXPECT_THAT(c, ::testing::ElementsAre(1, 2, 3));
  }
  for (size_t n = 0; n < rec.size(); ++n) {
    EXPECT_EQ(RecordReader::Open(rec.substr(0, n), "TEST", 3, "test").status().code(),
              absl::StatusCode::kDataLoss)
        << "torn at " << n;
  }
  for (size_t i = 0; i < rec.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = rec;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      EXPECT_EQ(RecordReader::Open(bad, "TEST", 3, "test").status().code(),
                absl::StatusCode::kDataLoss)
          << "byte " << i << " bit " << bit;
    }
  }
  EXPECT_THAT(RecordReader::Open(rec, "TEST", 4, "test").status().message(),
              HasSubstr("version 3"));
  EXPECT_THAT(RecordReader::Open(rec, "OTHR", 3, "test").status().message(),
              HasSubstr("not a 'OTHR' record"));
  // Fields read past the end, or left unread, fail Done().
  absl::StatusOr<RecordReader> r = RecordReader::Open(rec, "TEST", 3, "test");
  uint32_t a = 0;
  ASSERT_TRUE(r->U32(&a));
  EXPECT_EQ(r->Done().code(), absl::StatusCode::kDataLoss);
  std::vector<uint32_t> c;
  uint64_t b = 0;
  EXPECT_TRUE(r->U64(&b));
  EXPECT_FALSE(r->U32s(&c, 2)) << "a length above the caller's bound";
  EXPECT_EQ(r->Done().code(), absl::StatusCode::kDataLoss);
}

TEST(CheckedRecordTest, Crc32cKnownAnswer) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);  // the CRC-32C check value
}

class ScissorhandsStateTest : public ::testing::Test {
 protected:
  static constexpr size_t kHeads = 6;
  RetentionPolicy policy_ = MakeScissorhandsPolicy({64, 40, 4, 0, 2}, {64});
  PoolDevice& cpu_ = *CpuPoolDevice();

  std::unique_ptr<RetentionState> Fresh() {
    auto s = policy_.Strategy().NewState(policy_, kHeads, cpu_);
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  }
  static std::vector<uint32_t> Planes(RetentionState& s) {
    std::vector<uint32_t> planes;
    EXPECT_TRUE(static_cast<ScissorhandsState&>(s).rings().ReadPlanes(&planes).ok());
    return planes;
  }
};

TEST_F(ScissorhandsStateTest, RoundTripAfterRandomStepsThenEvolvesIdentically) {
  for (uint32_t seed : {1u, 2u, 3u, 4u}) {
    std::unique_ptr<RetentionState> a = Fresh();
    testing::DriveScissorhandsState(static_cast<ScissorhandsState&>(*a), kHeads, 90 + seed * 17, 40,
                                    seed);
    absl::StatusOr<std::string> bytes = a->Encode();
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto b = policy_.Strategy().DecodeState(policy_, kHeads, cpu_, *bytes);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ((*b)->decode_steps(), a->decode_steps());
    EXPECT_EQ(Planes(**b), Planes(*a)) << "seed " << seed;
    EXPECT_EQ(*(*b)->Encode(), *bytes) << "encoding is deterministic";
    // Both go on the same way: the same further steps leave the same history.
    testing::DriveScissorhandsState(static_cast<ScissorhandsState&>(*a), kHeads, 60, 10,
                                    seed + 100);
    testing::DriveScissorhandsState(static_cast<ScissorhandsState&>(**b), kHeads, 60, 10,
                                    seed + 100);
    EXPECT_EQ(Planes(**b), Planes(*a));
    const std::vector<uint32_t> live(kHeads, 60);
    const std::vector<std::vector<HeadFigure>> figures_a = a->Describe(live);
    ASSERT_EQ(figures_a.size(), size_t{kHeads});
    EXPECT_EQ((*b)->Describe(live), figures_a);
  }
}

TEST_F(ScissorhandsStateTest, AFreshStateRoundTrips) {
  std::unique_ptr<RetentionState> a = Fresh();
  auto b = policy_.Strategy().DecodeState(policy_, kHeads, cpu_, *a->Encode());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->decode_steps(), 0u);
  EXPECT_TRUE(Planes(**b).empty());
}

TEST_F(ScissorhandsStateTest, AnyDamageOrOtherShapeIsDataLossAndMakesNothing) {
  std::unique_ptr<RetentionState> a = Fresh();
  testing::DriveScissorhandsState(static_cast<ScissorhandsState&>(*a), kHeads, 70, 12, 9);
  const std::string bytes = *a->Encode();
  std::mt19937 rng(5);
  for (int i = 0; i < 200; ++i) {
    std::string bad = bytes;
    bad[rng() % bad.size()] ^= static_cast<char>(1 + rng() % 255);
    EXPECT_EQ(policy_.Strategy().DecodeState(policy_, kHeads, cpu_, bad).status().code(),
              absl::StatusCode::kDataLoss);
  }
  EXPECT_EQ(policy_.Strategy()
                .DecodeState(policy_, kHeads, cpu_, bytes.substr(0, bytes.size() / 2))
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
  auto other_heads = policy_.Strategy().DecodeState(policy_, kHeads + 1, cpu_, bytes);
  EXPECT_EQ(other_heads.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(other_heads.status().message(), HasSubstr("6 heads, window 40"));
  const RetentionPolicy other_window = MakeScissorhandsPolicy({64, 80, 4, 0, 2}, {64});
  EXPECT_EQ(other_window.Strategy().DecodeState(other_window, kHeads, cpu_, bytes).status().code(),
            absl::StatusCode::kDataLoss);
  // A policy without state takes only the empty encoding.
  const RetentionPolicy streaming = MakeStreamingPolicy({8, 2});
  EXPECT_EQ(streaming.Strategy().DecodeState(streaming, kHeads, cpu_, bytes).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_TRUE(streaming.Strategy().DecodeState(streaming, kHeads, cpu_, "").ok());
}

TEST(PolicyRegistryTest, EveryPolicyIsFoundByItsName) {
  for (const RetentionStrategy* s : RetentionPolicies())
    EXPECT_EQ(FindRetentionPolicy(s->name()), s);
  EXPECT_EQ(FindRetentionPolicy("full"), &RetentionStrategy::KeepAll());
  EXPECT_EQ(FindRetentionPolicy("nope"), nullptr);
}

}  // namespace
}  // namespace kvwarden
