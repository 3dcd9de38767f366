#include "cache_service/core/sequences/slot_map.h"

#include "gtest/gtest.h"

namespace kvwarden {
namespace {

TEST(SlotMapTest, IdentityUntilAGap) {
  SlotMap m;
  m.Append(0, 5);
  EXPECT_TRUE(m.identity());
  EXPECT_EQ(m.size(), 5u);
  EXPECT_EQ(m.position(3), 3u);
  EXPECT_EQ(m.LowerBound(2), 2u);
  EXPECT_EQ(m.LowerBound(99), 5u);
  m.Append(10, 2);  // positions 5..9 never reserved here
  EXPECT_FALSE(m.identity());
  EXPECT_EQ(m.size(), 7u);
  EXPECT_EQ(m.position(4), 4u);
  EXPECT_EQ(m.position(5), 10u);
  EXPECT_EQ(m.LowerBound(7), 5u);
  EXPECT_EQ(m.LowerBound(11), 6u);
}

}  // namespace
}  // namespace kvwarden
