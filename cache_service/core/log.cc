#include "cache_service/core/log.h"

#include <cstdio>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kvwarden {

void LogLine(char level, const std::string& message) {
  const std::string line =
      absl::StrFormat("%c %s kvwardend] %s\n", level,
                      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
                      message);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace kvwarden
