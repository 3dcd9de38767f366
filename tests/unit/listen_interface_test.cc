// The UCX worker listens where gRPC does: the interface behind the listen host.

#include "cache_service/dataplane/listen_interface.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include "gtest/gtest.h"

namespace kvwarden {
namespace {

TEST(ListenInterfaceTest, LoopbackWildcardAndUnknownAddresses) {
  EXPECT_EQ(ListenHost("127.0.0.1:50051"), "127.0.0.1");
  EXPECT_EQ(ListenHost("[::1]:0"), "::1");
  EXPECT_EQ(*UcxNetDevicesForListenHost("127.0.0.1"), "lo");
  EXPECT_EQ(*UcxNetDevicesForListenHost("127.1.2.3"), "lo");
  EXPECT_EQ(*UcxNetDevicesForListenHost("::1"), "lo");
  EXPECT_EQ(*UcxNetDevicesForListenHost("localhost"), "lo");
  EXPECT_EQ(*UcxNetDevicesForListenHost("0.0.0.0"), "");
  EXPECT_EQ(*UcxNetDevicesForListenHost(ListenHost("[::]:1")), "");
  EXPECT_EQ(UcxNetDevicesForListenHost("203.0.113.7").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(UcxNetDevicesForListenHost("example.com").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ListenInterfaceTest, ASpecificAddressMapsToTheInterfaceHoldingIt) {
  ifaddrs* list = nullptr;
  ASSERT_EQ(getifaddrs(&list), 0);
  int checked = 0;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof(text));
    if (std::string(text).rfind("127.", 0) == 0) continue;
    auto found = UcxNetDevicesForListenHost(text);
    ASSERT_TRUE(found.ok()) << text << ": " << found.status();
    EXPECT_EQ(*found, i->ifa_name) << text;
    ++checked;
  }
  freeifaddrs(list);
  if (checked == 0) GTEST_SKIP() << "no non-loopback IPv4 interface here";
}

}  // namespace
}  // namespace kvwarden
