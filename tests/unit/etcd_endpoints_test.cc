// The --cluster flag's endpoint list and etcd's prefix range end.

#include "common/cluster/etcd_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwarden {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(EtcdEndpointsTest, ParsesTheSchemeAndAListOfMembers) {
  auto one = ParseEtcdEndpoints("etcd://127.0.0.1:2379");
  ASSERT_TRUE(one.ok());
  EXPECT_THAT(*one, ElementsAre("127.0.0.1:2379"));
  auto three = ParseEtcdEndpoints("etcd://a:1,b.example:2,[::1]:3");
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_THAT(*three, ElementsAre("a:1", "b.example:2", "[::1]:3"));
  auto bare = ParseEtcdEndpoints("h:9");
  ASSERT_TRUE(bare.ok());
  EXPECT_THAT(*bare, ElementsAre("h:9"));
}

TEST(EtcdEndpointsTest, RefusesWhatIsNotHostPort) {
  for (const char* bad : {"", "etcd://", "etcd://h", "etcd://h:", "etcd://:1", "etcd://h:0",
                          "etcd://h:65536", "etcd://h:1,", "etcd://h:x", "http://h:1"}) {
    auto r = ParseEtcdEndpoints(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("is not HOST:PORT")) << bad;
  }
}

TEST(EtcdEndpointsTest, PrefixEndIsTheFirstKeyPastThePrefix) {
  EXPECT_EQ(PrefixEnd("/kvwarden/v1/nodes/"), "/kvwarden/v1/nodes0");
  EXPECT_EQ(PrefixEnd("a\xff"), "b");
  EXPECT_EQ(PrefixEnd("\xff\xff"), std::string(1, '\0'));
}

}  // namespace
}  // namespace kvwarden
