// Migration in SequenceTable, between two tables as two daemons hold them: the source
// pins and describes a sequence (BeginMigration), the target adopts it from the image
// and the pinned bytes (Adopt) and the source lets go (EndMigration). What the target
// adopts reads back byte for byte with the same positions per head, epoch and evicted
// counts; a corrupted page, a foreign layout or a bad image adopt nothing; the source
// takes no writes meanwhile and is intact after a migration that failed.

#include <cstring>

#include "cache_service/core/sequences/transfer_busy.h"
#include "cache_service/retention/streaming/streaming_policy.h"
#include "common/codec/checked_record.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/core_fixture.h"
#include "tests/support/kv_pattern.h"

namespace kvwarden {
namespace {

using testing::Core;
using testing::CoreConfig;
using ::testing::HasSubstr;

constexpr TenantId kAlpha = 0;

class SequenceMigrationTest : public ::testing::Test {
 protected:
  void TearDown() override {
    EXPECT_TRUE(source_.Check().ok()) << source_.Check();
    EXPECT_TRUE(target_.Check().ok()) << target_.Check();
  }

  // A streaming sequence that dropped tokens: positions per head are no longer 0..n-1.
  SequenceId CompressedSequence() {
    policy_ = MakeStreamingPolicy({8, 2});
    auto id = source_.table->Create({kAlpha, source_lease_, source_.pool.get(), 64, policy_});
    EXPECT_TRUE(id.ok()) << id.status();
    EXPECT_TRUE(source_.ReserveAndWrite(*id, kAlpha, 8).ok());
    EXPECT_TRUE(source_.ReserveAndWrite(*id, kAlpha, 5).ok());  // drops 5 of the middle
    return *id;
  }

  // Copies each layer's pinned pages out of the source as the TCP data path would.
  absl::StatusOr<SequenceId> AdoptFromSource(const MigrationStart& m, const SequenceImage& image,
                                             PagePool* pool = nullptr) {
    SequenceTable::AdoptArgs args{kAlpha, target_lease_, pool ? pool : target_.pool.get(), policy_,
                                  &image};
    return target_.table->Adopt(args, [&](uint32_t layer, absl::Span<const PageId> pages) {
      return source_.table->WithTransferPages(
          m.transfer, m.secret, TransferMode::kRead, layer, 0, static_cast<uint32_t>(pages.size()),
          [&](const TransferPages& from) {
            size_t i = 0;
            for (const PageRun& run : from.runs) {
              const uint8_t* src = from.pool->ChunkData(run.chunk) + run.offset;
              for (uint32_t p = 0; p < run.pages; ++p, ++i) {
                std::memcpy(args.pool->PageData(pages[i]),
                            src + size_t{p} * from.pool->page_bytes(), from.pool->page_bytes());
              }
            }
            return absl::OkStatus();
          });
    });
  }

  SequenceInfo Describe(Core& core, SequenceId id) {
    auto info =
        core.table->Describe(id, Caller::Admin(), /*include_pages=*/false, /*include_heads=*/true);
    EXPECT_TRUE(info.ok()) << info.status();
    return *info;
  }

  Core source_;
  Core target_;
  LeaseId source_lease_ = source_.Lease(kAlpha);
  LeaseId target_lease_ = target_.Lease(kAlpha);
  RetentionPolicy policy_;
};

TEST_F(SequenceMigrationTest, AdoptedSequenceReadsBackWithItsPositionsAndEpoch) {
  const SequenceId id = CompressedSequence();
  const SequenceInfo before = Describe(source_, id);
  ASSERT_GT(before.epoch, 0u);
  auto m = source_.table->BeginMigration(id, Caller::Tenant(kAlpha), absl::Seconds(30));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->image.num_tokens, 13u);
  EXPECT_EQ(m->image.epoch, before.epoch);
  EXPECT_FALSE(m->image.heads[0].positions.empty());
  EXPECT_EQ(m->image.page_crc32c.size(), size_t{m->image.layer_pages[0]} + m->image.layer_pages[1]);

  auto adopted = AdoptFromSource(*m, m->image);
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  ASSERT_TRUE(source_.table->EndMigration(m->transfer, id, /*adopted=*/true).ok());
  EXPECT_EQ(source_.table->Describe(id, Caller::Admin(), false, false).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(source_.pool->Stats().used_pages, 0u);

  const SequenceInfo after = Describe(target_, *adopted);
  EXPECT_EQ(after.epoch, before.epoch);
  EXPECT_EQ(after.num_tokens, before.num_tokens);
  EXPECT_EQ(after.max_tokens, before.max_tokens);
  EXPECT_EQ(after.pages_held, before.pages_held);
  ASSERT_EQ(after.heads.size(), before.heads.size());
  for (size_t lh = 0; lh < after.heads.size(); ++lh) {
    EXPECT_EQ(after.heads[lh].live_slots, before.heads[lh].live_slots);
    EXPECT_EQ(after.heads[lh].evicted, before.heads[lh].evicted);
  }
  // Tokens 0..1 (sinks) and 8..12 are what streaming kept; they read back as written.
  const KvLayout& l = target_.pool->layout();
  for (uint32_t layer = 0; layer < l.num_layers; ++layer) {
    auto slice =
        target_.table->ReadKV(*adopted, Caller::Tenant(kAlpha), layer, 8, 13, before.epoch);
    ASSERT_TRUE(slice.ok()) << slice.status();
    EXPECT_EQ(slice->k, testing::PatternKv(1, layer, l.num_kv_heads, 8, 5, l.token_bytes(), false));
    EXPECT_EQ(slice->v, testing::PatternKv(1, layer, l.num_kv_heads, 8, 5, l.token_bytes(), true));
  }
  // The adopted sequence goes on: its next reservation continues at position 13.
  auto r = target_.table->Reserve(*adopted, kAlpha, 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->first_position, 13u);
}

TEST_F(SequenceMigrationTest, SourceTakesNoWritesWhileMigratingAndIsIntactAfterAFailure) {
  const SequenceId id = CompressedSequence();
  auto m = source_.table->BeginMigration(id, Caller::Tenant(kAlpha), absl::Seconds(30));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(IsTransferBusy(source_.table->Reserve(id, kAlpha, 1).status()));
  absl::Status write = source_.WriteTokens(id, kAlpha, 0, 12, 1);
  EXPECT_EQ(write.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(write.message(), HasSubstr("migrating"));
  EXPECT_EQ(
      source_.table->BeginMigration(id, Caller::Tenant(kAlpha), absl::Seconds(30)).status().code(),
      absl::StatusCode::kFailedPrecondition);

  // One flipped checksum: the target adopts nothing and gives every page back.
  SequenceImage bad = m->image;
  bad.page_crc32c.back() ^= 1;
  auto adopted = AdoptFromSource(*m, bad);
  EXPECT_EQ(adopted.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(adopted.status().message(), HasSubstr("checksum"));
  EXPECT_EQ(target_.pool->Stats().used_pages, 0u);
  EXPECT_EQ(target_.ledger.Usage(kAlpha).pages, 0u);
  EXPECT_TRUE(target_.table->List(std::nullopt, "", 0).empty());

  ASSERT_TRUE(source_.table->EndMigration(m->transfer, id, /*adopted=*/false).ok());
  EXPECT_EQ(source_.pool->Stats().pinned_pages, 0u);
  EXPECT_TRUE(source_.ReserveAndWrite(id, kAlpha, 1).ok());
  EXPECT_EQ(Describe(source_, id).num_tokens, 14u);
}

TEST_F(SequenceMigrationTest, ImagesThatDoNotDescribeASequenceOfThePoolAreRefused) {
  const SequenceId id = CompressedSequence();
  auto m = source_.table->BeginMigration(id, Caller::Tenant(kAlpha), absl::Seconds(30));
  ASSERT_TRUE(m.ok()) << m.status();
  auto code = [&](SequenceImage im) { return AdoptFromSource(*m, im).status().code(); };
  SequenceImage im = m->image;
  im.layout.head_dim = 8;
  EXPECT_EQ(code(im), absl::StatusCode::kFailedPrecondition);
  im = m->image;
  im.num_tokens = im.max_tokens + 1;
  EXPECT_EQ(code(im), absl::StatusCode::kInvalidArgument);
  im = m->image;
  im.heads[1].positions[0] = im.heads[1].positions[1];  // not ascending
  EXPECT_EQ(code(im), absl::StatusCode::kInvalidArgument);
  im = m->image;
  im.layer_pages[0] = 1000;  // more pages than max_tokens needs
  EXPECT_EQ(code(im), absl::StatusCode::kInvalidArgument);
  im = m->image;
  im.page_crc32c.pop_back();
  EXPECT_EQ(code(im), absl::StatusCode::kInvalidArgument);
  im = m->image;
  im.heads.pop_back();
  EXPECT_EQ(code(im), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(target_.pool->Stats().used_pages, 0u);
  ASSERT_TRUE(source_.table->EndMigration(m->transfer, id, /*adopted=*/false).ok());
}

TEST_F(SequenceMigrationTest, LeaseLapseEndsTheMigrationAndTheGrantStopsServing) {
  const SequenceId id = CompressedSequence();
  auto m = source_.table->BeginMigration(id, Caller::Tenant(kAlpha), absl::Seconds(30));
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(source_.leases.Release(source_lease_, kAlpha).ok());
  source_.table->ReleaseByLease(source_lease_);
  auto adopted = AdoptFromSource(*m, m->image);
  EXPECT_EQ(adopted.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(target_.pool->Stats().used_pages, 0u);
  EXPECT_FALSE(source_.table->EndMigration(m->transfer, id, /*adopted=*/false).ok());
  EXPECT_EQ(source_.pool->Stats().used_pages, 0u);
}

TEST(Crc32cTest, HardwareAndTablePathsAgreeWithRfc3720) {
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  EXPECT_EQ(Crc32c(ascending), 0x46DD794Eu);
  // In pieces of odd sizes, as a continuation.
  EXPECT_EQ(Crc32c(ascending.substr(13), Crc32c(ascending.substr(0, 13))), 0x46DD794Eu);
}

}  // namespace
}  // namespace kvwarden
