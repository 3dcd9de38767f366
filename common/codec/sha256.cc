#include "common/codec/sha256.h"

#include <openssl/evp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"

namespace kvwarden {

std::string Sha256(absl::string_view data) {
  std::string out(kSha256Bytes, '\0');
  unsigned int len = 0;
  // EVP_Digest with SHA-256 cannot fail short of memory exhaustion, which aborts anyway.
  EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(out.data()), &len,
             EVP_sha256(), nullptr);
  return out;
}

std::string Sha256Hex(absl::string_view data) { return absl::BytesToHexString(Sha256(data)); }

bool ParseSha256Hex(absl::string_view hex, std::string* digest) {
  if (hex.size() != 2 * kSha256Bytes) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  *digest = absl::HexStringToBytes(hex);
  return true;
}

}  // namespace kvwarden
