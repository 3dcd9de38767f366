#include "common/cluster/prefix_watcher.h"

#include <pthread.h>

#include <utility>

namespace kvwarden {

PrefixWatcher::PrefixWatcher(Options options) : options_(std::move(options)) {
  thread_ = std::thread([this] {
    if (!options_.thread_name.empty()) {
      pthread_setname_np(pthread_self(), options_.thread_name.substr(0, 15).c_str());
    }
    Run();
  });
}

PrefixWatcher::~PrefixWatcher() {
  stop_.Notify();
  cancel_.Cancel();
  thread_.join();
}

bool PrefixWatcher::WaitListed(absl::Duration timeout) {
  return listed_.WaitForNotificationWithTimeout(timeout);
}

void PrefixWatcher::Run() {
  bool unreachable = false;
  int64_t next = 0;  // 0: list first
  while (!stop_.HasBeenNotified()) {
    absl::Status s;
    if (next == 0) {
      int64_t revision = 0;
      absl::StatusOr<std::vector<EtcdClient::KeyValue>> kvs =
          options_.etcd->GetPrefix(options_.prefix, &revision);
      if (kvs.ok()) {
        options_.on_listing(*kvs);
        next = revision + 1;
        if (!listed_.HasBeenNotified()) listed_.Notify();
      } else {
        s = kvs.status();
      }
    } else {
      absl::StatusOr<int64_t> resumed = options_.etcd->WatchPrefix(
          options_.prefix, next, options_.window,
          [this](const std::vector<EtcdClient::WatchEvent>& events) {
            for (const EtcdClient::WatchEvent& e : events) options_.on_event(e);
          },
          &cancel_);
      if (resumed.ok()) {
        next = *resumed;
      } else {
        s = resumed.status();
        next = 0;  // compacted past what was seen, or a member failed: list again, whole
      }
    }
    if (s.ok()) {
      if (unreachable && options_.on_back) options_.on_back();
      unreachable = false;
      continue;
    }
    if (s.code() == absl::StatusCode::kCancelled) break;
    if (!unreachable && options_.on_unreachable) options_.on_unreachable(s);
    unreachable = true;
    stop_.WaitForNotificationWithTimeout(absl::Seconds(1));
  }
}

}  // namespace kvwarden
