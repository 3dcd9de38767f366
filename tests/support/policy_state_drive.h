#pragma once

// Drives a policy's per-sequence state through random decode steps and compactions, the
// way a sequence's statistics would, for round-trip tests of its encoding.

#include <cstdint>
#include <random>
#include <vector>

#include "cache_service/retention/scissorhands/scissorhands_strategy.h"
#include "gtest/gtest.h"
#include "tests/support/policy_examples.h"

namespace kvwarden::testing {

// `messages` stats messages of 1-3 steps over every head holding `live` slots; after
// some of them one head keeps a random half of its slots (and then holds fewer).
inline void DriveScissorhandsState(ScissorhandsState& state, size_t heads, uint32_t live, int messages,
                                   uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint32_t> lives(heads, live);
  ASSERT_TRUE(state.Reserve(live).ok());
  for (int m = 0; m < messages; ++m) {
    const uint32_t steps = 1 + rng() % 3;
    std::vector<uint32_t> attended, offsets = {0}, ids;
    for (uint32_t s = 0; s < steps; ++s) {
      for (size_t h = 0; h < heads; ++h) {
        attended.push_back(lives[h] == 0 ? 0 : lives[h] - rng() % std::min<uint32_t>(lives[h], 5));
        for (uint32_t j = 0; j < attended.back(); ++j) {
          if (rng() % (3 + h) == 0) ids.push_back(j);
        }
        offsets.push_back(static_cast<uint32_t>(ids.size()));
      }
    }
    ASSERT_TRUE(state.rings().Record(state.decode_steps(), steps, lives, attended, ListedIdsOf(ids, offsets)).ok());
    state.CountSteps(steps);
    if (rng() % 4 == 0) {
      const uint32_t lh = static_cast<uint32_t>(rng() % heads);
      std::vector<uint32_t> kept;
      for (uint32_t j = 0; j < lives[lh]; ++j) {
        if (rng() % 2) kept.push_back(j);
      }
      state.Compacted({HeadCompaction{lh, &kept, lives[lh]}});
      lives[lh] = static_cast<uint32_t>(kept.size());
    }
  }
}

}  // namespace kvwarden::testing
