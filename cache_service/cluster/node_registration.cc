#include "cache_service/cluster/node_registration.h"

#include <pthread.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "cache_service/util/log.h"
#include "common/cluster/entry_json.h"

namespace kvwarden {

NodeRegistration::NodeRegistration(Options options)
    : options_(std::move(options)), key_(NodeKey(options_.key_prefix, options_.node)) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kvw-cluster");
    Run();
  });
}

NodeRegistration::~NodeRegistration() {
  stop_.Notify();
  thread_.join();
  int64_t lease;
  {
    absl::MutexLock lock(&mu_);
    lease = lease_;
  }
  if (options_.on_lease) options_.on_lease(0);
  // The entry goes with its lease: at once on a clean stop.
  if (lease != 0) {
    if (absl::Status s = options_.etcd->Revoke(lease); !s.ok()) {
      LogEvent(LogLevel::kWarning, "cluster_leave_failed")
          .Field("node", options_.node)
          .Field("error", s.ToString());
    } else {
      LogEvent(LogLevel::kInfo, "cluster_left").Field("node", options_.node);
    }
  }
}

bool NodeRegistration::registered() const {
  absl::MutexLock lock(&mu_);
  return lease_ != 0;
}

uint64_t NodeRegistration::registrations() const {
  absl::MutexLock lock(&mu_);
  return registrations_;
}

absl::Status NodeRegistration::WriteEntry(int64_t lease) {
  v1::NodeInfo info = options_.describe ? options_.describe() : v1::NodeInfo();
  info.set_node(options_.node);
  info.set_updated_unix_ms(absl::ToUnixMillis(absl::Now()));
  info.set_lease_ttl_s(static_cast<uint32_t>(absl::ToInt64Seconds(options_.ttl)));
  return options_.etcd->Put(key_, EntryJson(info), lease);
}

bool NodeRegistration::Register() {
  absl::StatusOr<int64_t> lease = options_.etcd->GrantLease(options_.ttl);
  absl::Status s = lease.ok() ? WriteEntry(*lease) : lease.status();
  if (!s.ok()) {
    if (lease.ok()) (void)options_.etcd->Revoke(*lease);
    return false;
  }
  uint64_t n;
  {
    absl::MutexLock lock(&mu_);
    lease_ = *lease;
    n = ++registrations_;
  }
  if (options_.on_lease) options_.on_lease(*lease);
  LogEvent(LogLevel::kInfo, "cluster_registered")
      .Field("node", options_.node)
      .Field("key", key_)
      .Field("etcd", options_.etcd->current_endpoint())
      .Field("lease_ttl_s", absl::ToInt64Seconds(options_.ttl))
      .Field("registrations", n);
  return true;
}

bool NodeRegistration::Renew() {
  int64_t lease;
  {
    absl::MutexLock lock(&mu_);
    lease = lease_;
  }
  absl::StatusOr<absl::Duration> left = options_.etcd->KeepAlive(lease);
  absl::Status s = left.ok() ? WriteEntry(lease) : left.status();
  if (s.ok()) return true;
  if (s.code() == absl::StatusCode::kNotFound) {
    // etcd no longer has the lease (nor, with it, the entry): register anew.
    {
      absl::MutexLock lock(&mu_);
      lease_ = 0;
    }
    if (options_.on_lease) options_.on_lease(0);
  }
  return false;
}

void NodeRegistration::Run() {
  const absl::Duration renew_every = options_.ttl / 3;
  bool warned = false;
  absl::Status last;
  while (!stop_.HasBeenNotified()) {
    const bool was_registered = registered();
    const bool ok = was_registered ? Renew() : Register();
    if (ok) {
      if (warned)
        LogEvent(LogLevel::kInfo, "cluster_etcd_back")
            .Field("etcd", options_.etcd->current_endpoint());
      warned = false;
    } else if (!warned) {
      // Once per outage: the daemon serves on; the thread retries each second.
      LogEvent(LogLevel::kWarning, "cluster_etcd_unreachable")
          .Field("node", options_.node)
          .Field("registered", registered())
          .Field("retry_s", 1);
      warned = true;
    }
    const absl::Duration wait = ok ? renew_every : std::min(renew_every, absl::Seconds(1));
    stop_.WaitForNotificationWithTimeout(wait);
  }
}

}  // namespace kvwarden
