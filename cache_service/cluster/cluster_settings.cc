#include "cache_service/cluster/cluster_settings.h"

#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kvwarden {
namespace {

bool NodeNameOk(const std::string& n) {
  if (n.empty() || n.size() > 253) return false;  // a Kubernetes node name fits
  for (char c : n) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      return false;
  }
  return true;
}

}  // namespace

absl::Status ValidateClusterSettings(const ClusterSettings& s) {
  if (!s.enabled()) {
    if (!s.node.empty()) {
      return absl::InvalidArgumentError(
          "cluster.node: set without cluster endpoints (--cluster or cluster.endpoints)");
    }
    return absl::OkStatus();
  }
  if (s.node.empty()) {
    return absl::InvalidArgumentError(
        "cluster.node: is required with cluster endpoints (--node or cluster.node)");
  }
  if (!NodeNameOk(s.node)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cluster.node: '", s.node, "' may hold only letters, digits, '.', '_' and '-' (1 to 253)"));
  }
  if (s.key_prefix.empty() || s.key_prefix[0] != '/' || absl::EndsWith(s.key_prefix, "/")) {
    return absl::InvalidArgumentError(absl::StrCat("cluster.key_prefix: '", s.key_prefix,
                                                   "' must start with '/' and not end with one"));
  }
  if (!s.advertise.empty() && s.advertise.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("cluster.advertise: '", s.advertise, "' is not HOST:PORT"));
  }
  return absl::OkStatus();
}

std::string AdvertisedAddress(const ClusterSettings& s, const std::string& bound_address) {
  if (!s.advertise.empty()) return s.advertise;
  const size_t colon = bound_address.rfind(':');
  const std::string host = bound_address.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    char name[256] = {};
    if (gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0') {
      return absl::StrCat(name, bound_address.substr(colon));
    }
  }
  return bound_address;
}

}  // namespace kvwarden
