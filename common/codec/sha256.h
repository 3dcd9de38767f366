#pragma once

// SHA-256 (OpenSSL's) for tokens: fleet-wide tenants are stored in etcd by the digest of
// their token, never the token itself.

#include <string>

#include "absl/strings/string_view.h"

namespace kvwarden {

inline constexpr size_t kSha256Bytes = 32;

// The 32-byte digest of `data`.
std::string Sha256(absl::string_view data);
// Lowercase hex of Sha256(data): 64 characters.
std::string Sha256Hex(absl::string_view data);
// Parses 64 hex digits (either case) into the 32-byte digest; false for anything else.
bool ParseSha256Hex(absl::string_view hex, std::string* digest);

}  // namespace kvwarden
