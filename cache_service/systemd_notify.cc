#include "cache_service/systemd_notify.h"

#include <pthread.h>

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cache_service/util/log.h"

#ifdef KVW_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace kvwarden {
namespace {

void Notify(const std::string& state) {
#ifdef KVW_HAVE_SYSTEMD
  sd_notify(0, state.c_str());
#else
  (void)state;
#endif
}

// The watchdog interval systemd asked for (WATCHDOG_USEC for this pid), or zero.
absl::Duration WatchdogInterval() {
#ifdef KVW_HAVE_SYSTEMD
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) return absl::Microseconds(usec);
#endif
  return absl::ZeroDuration();
}

}  // namespace

SystemdNotifier::SystemdNotifier(std::function<void()> probe) : probe_(std::move(probe)) {}

SystemdNotifier::~SystemdNotifier() {
  stop_.Notify();
  if (watchdog_.joinable()) watchdog_.join();
}

void SystemdNotifier::Ready(const std::string& status) {
  Notify(absl::StrCat("READY=1\nSTATUS=", status));
  const absl::Duration interval = WatchdogInterval();
  if (interval <= absl::ZeroDuration() || watchdog_.joinable()) return;
  LogEvent(LogLevel::kInfo, "watchdog").Field("interval", interval);
  watchdog_ = std::thread([this, interval] {
    pthread_setname_np(pthread_self(), "kvw-watchdog");
    do {
      probe_();
      Notify("WATCHDOG=1");
    } while (!stop_.WaitForNotificationWithTimeout(interval / 2));
  });
}

void SystemdNotifier::Stopping() { Notify("STOPPING=1"); }

}  // namespace kvwarden
