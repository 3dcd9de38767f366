#include "cache_service/util/log.h"

#include <atomic>
#include <memory>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/logger.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace kvwarden {
namespace {

std::atomic<LogFormat> g_format{LogFormat::kText};
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

spdlog::level::level_enum ToSpd(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarning: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

// spdlog writes the time (UTC, ms) and level; the event's fields are the message.
void SetPattern(spdlog::logger& logger, LogFormat format) {
  const char* pattern = format == LogFormat::kJson ? R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l",%v})"
                                                   : "ts=%Y-%m-%dT%H:%M:%S.%eZ level=%l %v";
  logger.set_formatter(std::make_unique<spdlog::pattern_formatter>(pattern, spdlog::pattern_time_type::utc));
}

spdlog::logger& Logger() {
  // Never destroyed: threads may log during exit.
  static spdlog::logger* logger = [] {
    auto* l = new spdlog::logger("kvwardend", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    SetPattern(*l, LogFormat::kText);
    l->set_level(spdlog::level::trace);  // filtered by LogEnabled
    l->flush_on(spdlog::level::trace);   // every line at once: logs are read by tail and journald
    return l;
  }();
  return *logger;
}

void AppendJsonString(std::string& out, absl::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

// key=value; the value quoted (with \" \\ \n escapes) when empty or holding a space,
// quote, '=' or a control character, so a line splits on spaces unambiguously.
void AppendTextValue(std::string& out, absl::string_view s) {
  const bool quote = s.empty() || s.find_first_of(" \"=\\\t\n\r") != absl::string_view::npos;
  if (!quote) {
    out.append(s.data(), s.size());
    return;
  }
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20) {
      out += ' ';
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

}  // namespace

void ConfigureLog(LogFormat format, LogLevel level) {
  g_format.store(format);
  g_level.store(static_cast<int>(level));
  SetPattern(Logger(), format);
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

bool ParseLogLevel(absl::string_view name, LogLevel* out) {
  static constexpr std::pair<const char*, LogLevel> kNames[] = {
      {"debug", LogLevel::kDebug}, {"info", LogLevel::kInfo}, {"warning", LogLevel::kWarning},
      {"error", LogLevel::kError}};
  for (const auto& [n, l] : kNames) {
    if (name == n) {
      *out = l;
      return true;
    }
  }
  return false;
}

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "?";
}

bool ParseLogFormat(absl::string_view name, LogFormat* out) {
  if (name == "text") *out = LogFormat::kText;
  else if (name == "json") *out = LogFormat::kJson;
  else return false;
  return true;
}

LogEvent::LogEvent(LogLevel level, absl::string_view event) : level_(level), on_(LogEnabled(level)) {
  if (on_) fields_.emplace_back("event", std::string(event), true);
}

LogEvent& LogEvent::Field(absl::string_view key, absl::string_view value) {
  if (on_) fields_.emplace_back(std::string(key), std::string(value), true);
  return *this;
}
LogEvent& LogEvent::Field(absl::string_view key, bool value) { return Number(key, value ? "true" : "false"); }
LogEvent& LogEvent::Field(absl::string_view key, double value) { return Number(key, absl::StrFormat("%.6g", value)); }
LogEvent& LogEvent::Field(absl::string_view key, absl::Duration value) {
  return Number(key, absl::StrFormat("%.3f", absl::ToDoubleSeconds(value)));
}
LogEvent& LogEvent::Number(absl::string_view key, std::string digits) {
  if (on_) fields_.emplace_back(std::string(key), std::move(digits), false);
  return *this;
}

LogEvent::~LogEvent() {
  if (!on_) return;
  const bool json = g_format.load(std::memory_order_relaxed) == LogFormat::kJson;
  std::string line;
  for (size_t i = 0; i < fields_.size(); ++i) {
    const auto& [key, value, quoted] = fields_[i];
    if (i > 0) line += json ? "," : " ";
    if (json) {
      AppendJsonString(line, key);
      line += ':';
      if (quoted) {
        AppendJsonString(line, value);
      } else {
        line += value;
      }
    } else {
      line += key;
      line += '=';
      AppendTextValue(line, value);
    }
  }
  Logger().log(ToSpd(level_), spdlog::string_view_t(line.data(), line.size()));
}

bool LogThrottle::Allow(uint64_t key, uint64_t* suppressed) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  Entry& e = entries_[key];
  if (now - e.last < period_) {
    ++e.held;
    return false;
  }
  *suppressed = e.held;
  e.held = 0;
  e.last = now;
  return true;
}

}  // namespace kvwarden
