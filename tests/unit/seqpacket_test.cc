// The attach socket's record format: records keep their boundaries, descriptors beyond
// one record's SCM_RIGHTS limit arrive on continuation records, a closed peer and a
// missing answer are errors, never a hang.

#include "common/fd/seqpacket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "gtest/gtest.h"

namespace kvwarden {
namespace {

struct Pair {
  Pair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds), 0);
    a.reset(fds[0]);
    b.reset(fds[1]);
  }
  UniqueFd a, b;
};

TEST(SeqpacketTest, RecordsKeepTheirBoundaries) {
  Pair p;
  ASSERT_TRUE(SendRecord(p.a.get(), "first").ok());
  ASSERT_TRUE(SendRecord(p.a.get(), "second record").ok());
  std::vector<UniqueFd> fds;
  EXPECT_EQ(*RecvRecord(p.b.get(), &fds), "first");
  EXPECT_EQ(*RecvRecord(p.b.get(), &fds), "second record");
  EXPECT_TRUE(fds.empty());
}

TEST(SeqpacketTest, ManyDescriptorsArriveOverContinuationRecords) {
  Pair p;
  std::vector<UniqueFd> sent;
  std::vector<int> raw;
  for (int i = 0; i < 450; ++i) {
    sent.emplace_back(open("/dev/null", O_RDONLY | O_CLOEXEC));
    raw.push_back(sent.back().get());
  }
  ASSERT_TRUE(SendRecord(p.a.get(), "header", raw).ok());
  std::vector<UniqueFd> got;
  ASSERT_EQ(*RecvRecord(p.b.get(), &got), "header");
  EXPECT_EQ(got.size(), kFdsPerRecord);
  ASSERT_TRUE(RecvFds(p.b.get(), 450, &got).ok());
  ASSERT_EQ(got.size(), 450u);
  struct stat s1, s2;
  ASSERT_EQ(fstat(got[449].get(), &s1), 0);
  ASSERT_EQ(fstat(sent[449].get(), &s2), 0);
  EXPECT_EQ(s1.st_ino, s2.st_ino);
}

TEST(SeqpacketTest, AClosedPeerOrNoAnswerIsAnErrorNotAHang) {
  Pair p;
  std::vector<UniqueFd> fds;
  auto none = RecvRecord(p.b.get(), &fds, absl::Milliseconds(50));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kDeadlineExceeded);
  p.a.reset();
  auto closed = RecvRecord(p.b.get(), &fds, absl::Milliseconds(50));
  EXPECT_EQ(closed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(SendRecord(p.b.get(), "").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvwarden
