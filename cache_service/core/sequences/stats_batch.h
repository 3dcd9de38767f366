#pragma once

// Attention statistics as the daemon takes them (see StreamStats in control.proto), and
// what applying them changed.

#include <cstdint>
#include <vector>

namespace kvwarden {

struct HeadStepStats {
  uint32_t layer = 0;
  uint32_t head = 0;
  uint32_t attended = 0;
  std::vector<uint32_t> listed;  // sparse mode
  std::vector<float> dense;      // dense mode: `attended` values
};
struct DecodeStepStats {
  std::vector<HeadStepStats> heads;  // every (layer, head) exactly once
};
struct WindowScoresIn {
  uint32_t layer = 0;
  std::vector<float> sums;  // [head][candidate]
};
struct StatsBatch {
  uint64_t epoch = 0;
  std::vector<DecodeStepStats> steps;
  std::vector<WindowScoresIn> window_scores;
};

struct HeadRetention {
  uint32_t layer = 0;
  uint32_t head = 0;
  uint32_t live_slots = 0;
  std::vector<uint32_t> evicted_positions;
};
struct RetentionResult {
  uint64_t epoch = 0;
  uint32_t steps_applied = 0;
  std::vector<HeadRetention> changes;
  uint64_t pages_freed = 0;
};

}  // namespace kvwarden
