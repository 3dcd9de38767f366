#pragma once

// Minimal leveled logging to stderr: one line per event, with a UTC timestamp.
// Thread-safe (a single fwrite per line).

#include <string>

#include "absl/strings/str_format.h"

namespace kvwarden {

void LogLine(char level, const std::string& message);

template <typename... Args>
void LogInfo(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine('I', absl::StrFormat(format, args...));
}

template <typename... Args>
void LogWarning(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine('W', absl::StrFormat(format, args...));
}

}  // namespace kvwarden
