#include "cache_service/dataplane/listen_interface.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvwarden {

std::string ListenHost(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return host;
}

absl::StatusOr<std::string> UcxNetDevicesForListenHost(const std::string& host) {
  if (host.empty() || host == "0.0.0.0" || host == "::" || host == "*") return std::string();
  if (host == "localhost") return std::string("lo");
  in_addr v4{};
  in6_addr v6{};
  const bool is_v4 = inet_pton(AF_INET, host.c_str(), &v4) == 1;
  const bool is_v6 = !is_v4 && inet_pton(AF_INET6, host.c_str(), &v6) == 1;
  if (!is_v4 && !is_v6) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", host, "' is not an IP address: set data_plane.ucx_net_devices for a host name"));
  }
  if (is_v4 && (ntohl(v4.s_addr) >> 24) == 127) return std::string("lo");
  if (is_v6 && IN6_IS_ADDR_LOOPBACK(&v6)) return std::string("lo");
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return absl::InternalError(absl::StrCat("getifaddrs: ", std::strerror(errno)));
  std::string found;
  for (ifaddrs* i = list; i != nullptr && found.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    if (is_v4 && i->ifa_addr->sa_family == AF_INET &&
        reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr == v4.s_addr) {
      found = i->ifa_name;
    } else if (is_v6 && i->ifa_addr->sa_family == AF_INET6 &&
               std::memcmp(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, &v6, sizeof(v6)) == 0) {
      found = i->ifa_name;
    }
  }
  freeifaddrs(list);
  if (found.empty()) return absl::NotFoundError(absl::StrCat("no network interface holds ", host));
  return found;
}

}  // namespace kvwarden
