// kill -9 of a worker process holding a lease: after the TTL its pages come back to the
// pool and the tenant, and no other sequence changes.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "kvwarden/client.h"
#include "tests/support/kv_pattern.h"
#include "tests/support/process.h"
#include "tests/support/test_config.h"

namespace kvwarden {
namespace {

using testing::DaemonProcess;
using testing::PatternKv;

TEST(LeaseCrashTest, KilledWorkersPagesComeBackAndOthersAreUntouched) {
  auto daemon = DaemonProcess::Start(testing::kTestConfig);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto alpha = *Client::Connect({(*daemon)->target(), testing::kAlphaToken, absl::Seconds(10)});

  // A survivor sequence of the same tenant, held by this process.
  auto lease = alpha->RegisterWorker("survivor", client::Role::kDecode, 60000);
  ASSERT_TRUE(lease.ok());
  auto keep = alpha->CreateSequence(lease->id, "main", 64);
  ASSERT_TRUE(keep.ok());
  const auto& l = keep->layout;
  ASSERT_TRUE(alpha->ReserveSlots(keep->id, 50).ok());
  std::string k = PatternKv(1, 2, l.num_kv_heads, 0, 50, l.token_bytes(), false);
  std::string v = PatternKv(1, 2, l.num_kv_heads, 0, 50, l.token_bytes(), true);
  ASSERT_TRUE(alpha
                  ->WriteKV(keep->id, l, 2, 1, 0, 50,
                            {reinterpret_cast<const uint8_t*>(k.data()), k.size()},
                            {reinterpret_cast<const uint8_t*>(v.data()), v.size()})
                  .ok());
  auto before = alpha->DescribeSequence(keep->id);
  ASSERT_TRUE(before.ok());

  auto worker =
      testing::SpawnWithStdoutPipe({testing::BinPath("kvw_lease_holder"), (*daemon)->target(),
                                    testing::kAlphaToken, "main", "300", "40"});
  ASSERT_GT(worker.pid, 0);
  const std::string ready = testing::ReadLine(worker.stdout_fd);
  ASSERT_EQ(ready.rfind("READY ", 0), 0u) << "worker said: " << ready;
  const uint64_t doomed = std::stoull(ready.substr(6));
  auto doomed_info = alpha->DescribeSequence(doomed);
  ASSERT_TRUE(doomed_info.ok());
  EXPECT_EQ(doomed_info->pages_held, 40u);  // 10 pages x 4 layers

  const absl::Time killed = absl::Now();
  ASSERT_EQ(kill(worker.pid, SIGKILL), 0);
  int status = 0;
  waitpid(worker.pid, &status, 0);
  close(worker.stdout_fd);

  // The lease lapses 300 ms after the last keep-alive; the reaper runs every 20 ms.
  absl::Status gone;
  while (absl::Now() - killed < absl::Seconds(10)) {
    gone = alpha->DescribeSequence(doomed).status();
    if (gone.code() == absl::StatusCode::kNotFound) break;
  }
  EXPECT_EQ(gone.code(), absl::StatusCode::kNotFound);
  EXPECT_GE(absl::Now() - killed, absl::Milliseconds(100)) << "released before its TTL";

  auto after = alpha->DescribeSequence(keep->id);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->pages_held, before->pages_held);
  EXPECT_EQ(after->num_tokens, 50u);
  auto read = alpha->ReadKV(keep->id, 2, 1, 0, 0);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ((*read)[0].k, k);
  EXPECT_EQ((*read)[0].v, v);
  ASSERT_TRUE(alpha->ReleaseSequence(keep->id).ok());

  // Nothing leaked: the tenant and the pool are back to zero.
  auto tenants =
      testing::RunCommand({testing::BinPath("kvwctl"), "--target=" + (*daemon)->target(),
                           "--token=" + std::string(testing::kAdminToken), "--json", "tenants"});
  ASSERT_EQ(tenants.exit_code, 0) << tenants.err;
  size_t zero = 0;
  for (size_t at = 0; (at = tenants.out.find("\"used_pages\": 0,", at)) != std::string::npos; ++at)
    ++zero;
  EXPECT_EQ(zero, 2u) << "both tenants back to zero pages:\n" << tenants.out;
  EXPECT_NE((*daemon)->log().find("event=lease_lapsed"), std::string::npos) << (*daemon)->log();
  EXPECT_NE((*daemon)->log().find("sequences_released=1"), std::string::npos) << (*daemon)->log();
}

}  // namespace
}  // namespace kvwarden
