#pragma once

// kvwardend's log: one structured line per event that matters on stderr, written by
// spdlog (time and level) with the event's fields rendered here, as key=value text
// (default) or one JSON object per line. Events, not RPCs: nothing is logged per call at
// the default level (info). Thread-safe.
//
//   LogEvent(LogLevel::kInfo, "lease_lapsed").Field("lease", id).Field("tenant", name);
//   -> ts=2026-11-30T22:36:37.182Z level=info event=lease_lapsed lease=42 tenant=alpha

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace kvwarden {

enum class LogLevel { kDebug, kInfo, kWarning, kError };
enum class LogFormat { kText, kJson };

// Sets the format and the lowest level written (default: text, info). Call before
// threads start; later calls are allowed but not ordered with concurrent lines.
void ConfigureLog(LogFormat format, LogLevel level);
bool LogEnabled(LogLevel level);
// "debug" | "info" | "warning" | "error"; "text" | "json". False for anything else.
bool ParseLogLevel(absl::string_view name, LogLevel* out);
const char* LogLevelName(LogLevel level);
bool ParseLogFormat(absl::string_view name, LogFormat* out);

// One event: a name and fields, written as one line when it goes out of scope (nothing
// is built when its level is off).
class LogEvent {
 public:
  LogEvent(LogLevel level, absl::string_view event);
  ~LogEvent();
  LogEvent(const LogEvent&) = delete;
  LogEvent& operator=(const LogEvent&) = delete;

  LogEvent& Field(absl::string_view key, absl::string_view value);
  LogEvent& Field(absl::string_view key, const std::string& value) { return Field(key, absl::string_view(value)); }
  LogEvent& Field(absl::string_view key, const char* value) { return Field(key, absl::string_view(value)); }
  LogEvent& Field(absl::string_view key, bool value);
  LogEvent& Field(absl::string_view key, double value);
  LogEvent& Field(absl::string_view key, absl::Duration value);  // seconds
  template <typename Int, std::enable_if_t<std::is_integral_v<Int> && !std::is_same_v<Int, bool>, int> = 0>
  LogEvent& Field(absl::string_view key, Int value) {
    return Number(key, absl::StrCat(value));
  }

 private:
  LogEvent& Number(absl::string_view key, std::string digits);
  const LogLevel level_;
  const bool on_;
  // (key, value, quoted): strings are quoted/escaped by the format, numbers are not.
  std::vector<std::tuple<std::string, std::string, bool>> fields_;
};

// A free-form line: event "log" with `msg` (for what has no fields of its own).
template <typename... Args>
void LogInfo(const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(LogLevel::kInfo)) LogEvent(LogLevel::kInfo, "log").Field("msg", absl::StrFormat(format, args...));
}
template <typename... Args>
void LogWarning(const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(LogLevel::kWarning)) {
    LogEvent(LogLevel::kWarning, "log").Field("msg", absl::StrFormat(format, args...));
  }
}

// At most one line per `key` per `period`: Allow() says whether to log now and how many
// were held back since the last line (which that line should report). For events a
// tenant can repeat at will (quota refusals). Thread-safe.
class LogThrottle {
 public:
  explicit LogThrottle(absl::Duration period) : period_(period) {}
  bool Allow(uint64_t key, uint64_t* suppressed);

 private:
  struct Entry {
    absl::Time last = absl::InfinitePast();
    uint64_t held = 0;
  };
  const absl::Duration period_;
  absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvwarden
