#include "cache_service/core/tenancy/authenticator.h"

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

}  // namespace
}  // namespace kvwarden
