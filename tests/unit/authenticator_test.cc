#include "cache_service/core/tenancy/authenticator.h"

#include "common/codec/sha256.h"
#include "gtest/gtest.h"

namespace kvwarden {
namespace {

TEST(AuthenticatorTest, ResolvesBearerTokens) {
  Authenticator auth("adm", {"ta", "tb"});
  EXPECT_TRUE(auth.Authenticate("Bearer adm")->admin);
  EXPECT_EQ(auth.Authenticate("Bearer tb")->tenant, 1u);
  EXPECT_FALSE(auth.Authenticate("Bearer tb")->admin);
  for (const char* bad : {"", "tb", "Bearer ", "Bearer t", "bearer ta", "Bearer ta "}) {
    EXPECT_EQ(auth.Authenticate(bad).status().code(), absl::StatusCode::kUnauthenticated) << bad;
  }
}

TEST(Sha256Test, KnownDigests) {
  // FIPS 180-2's examples.
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  std::string digest;
  EXPECT_TRUE(ParseSha256Hex(Sha256Hex("abc"), &digest));
  EXPECT_EQ(digest, Sha256("abc"));
  EXPECT_TRUE(
      ParseSha256Hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", &digest));
  for (const char* bad :
       {"", "abc", "zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad00"}) {
    EXPECT_FALSE(ParseSha256Hex(bad, &digest)) << bad;
  }
}

// Fleet-wide tenants are known by their token's digest, which may change or go.
TEST(AuthenticatorTest, TenantsKnownByDigestComeChangeAndGo) {
  Authenticator auth("adm", {"ta"}, "peer");
  EXPECT_EQ(auth.Authenticate("Bearer tc").status().code(), absl::StatusCode::kUnauthenticated);
  ASSERT_TRUE(auth.SetTenantDigest(5, Sha256("tc")).ok());
  EXPECT_EQ(auth.Authenticate("Bearer tc")->tenant, 5u);
  // A new token replaces the old one.
  ASSERT_TRUE(auth.SetTenantDigest(5, Sha256("tc2")).ok());
  EXPECT_EQ(auth.Authenticate("Bearer tc").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Authenticate("Bearer tc2")->tenant, 5u);
  // Another tenant's, the admin's or the peer's token: refused, nothing changes.
  for (const char* taken : {"ta", "adm", "peer", "tc2"}) {
    EXPECT_EQ(auth.SetTenantDigest(6, Sha256(taken)).code(), absl::StatusCode::kAlreadyExists)
        << taken;
  }
  EXPECT_EQ(auth.Authenticate("Bearer ta")->tenant, 0u);
  EXPECT_TRUE(auth.Authenticate("Bearer adm")->admin);
  EXPECT_EQ(auth.Authenticate("Bearer tc2")->tenant, 5u);
  auth.RemoveTenant(5);
  EXPECT_EQ(auth.Authenticate("Bearer tc2").status().code(), absl::StatusCode::kUnauthenticated);
  auth.RemoveTenant(5);  // twice: nothing
  EXPECT_EQ(auth.Authenticate("Bearer ta")->tenant, 0u);
}

}  // namespace
}  // namespace kvwarden
