#pragma once

// systemd's service protocol (Type=notify) via libsystemd's sd_notify: READY=1 once the
// daemon serves, STOPPING=1 when it begins to shut down, and WATCHDOG=1 while a probe of
// the daemon's state answers (WatchdogSec=). All no-ops outside systemd (no
// NOTIFY_SOCKET) and when built without libsystemd.

#include <functional>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"

namespace kvwarden {

class SystemdNotifier {
 public:
  // `probe` is called from the watchdog thread ("kvw-watchdog") every half watchdog
  // interval; it returns once the daemon's locks answered. A probe that hangs (a
  // deadlock) stops the pings, and systemd restarts the service.
  explicit SystemdNotifier(std::function<void()> probe);
  ~SystemdNotifier();  // stops the watchdog thread
  SystemdNotifier(const SystemdNotifier&) = delete;
  SystemdNotifier& operator=(const SystemdNotifier&) = delete;

  void Ready(const std::string& status);
  void Stopping();

 private:
  std::function<void()> probe_;
  absl::Notification stop_;
  std::thread watchdog_;
};

}  // namespace kvwarden
