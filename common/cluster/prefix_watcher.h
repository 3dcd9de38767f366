#pragma once

// Follows every key under one etcd prefix on one named thread: lists the prefix, hands
// the whole listing over, then watches from the listed revision and hands over each
// change. The list-then-watch loop starts over after any failure (etcd unreachable, a
// failed member, history compacted past what was seen), so a consumer that applies a
// listing whole (dropping what it does not name) is never left behind. A watch is
// re-created every `window`, so a frozen member is left within two windows.
// The callbacks run on the watcher's thread, one at a time.

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/cluster/etcd_client.h"

namespace kvwarden {

class PrefixWatcher {
 public:
  struct Options {
    EtcdClient* etcd = nullptr;  // required; outlives this
    std::string prefix;          // required
    std::string thread_name;     // at most 15 characters
    absl::Duration window = absl::Seconds(5);
    // Every key under the prefix as of one revision (at start and after each failure).
    std::function<void(const std::vector<EtcdClient::KeyValue>&)> on_listing;
    // One change after the listing, in revision order.
    std::function<void(const EtcdClient::WatchEvent&)> on_event;
    // etcd stopped answering (once per outage) and answered again; may be null.
    std::function<void(const absl::Status&)> on_unreachable;
    std::function<void()> on_back;
  };

  // Starts the thread; the first listing is attempted at once.
  explicit PrefixWatcher(Options options);
  // Stops the watch in progress and joins the thread.
  ~PrefixWatcher();
  PrefixWatcher(const PrefixWatcher&) = delete;
  PrefixWatcher& operator=(const PrefixWatcher&) = delete;

  // Whether the first listing was handed over within `timeout`.
  bool WaitListed(absl::Duration timeout);

 private:
  void Run();

  const Options options_;
  EtcdClient::WatchCancel cancel_;
  absl::Notification stop_;
  absl::Notification listed_;
  std::thread thread_;  // last: it uses the rest
};

}  // namespace kvwarden
