#pragma once

// A client of etcd's v3 gRPC API (the KV and Lease services; proto/etcd/ declares the
// subset with etcd's own names and numbers) over the members of one etcd cluster.
//
// Each call goes to the member that answered last; on UNAVAILABLE or DEADLINE_EXCEEDED
// it moves on to the next, so a stopped or frozen (SIGSTOP) member costs one call
// deadline, not an outage. Calls are synchronous with a deadline and never wait on
// anything else. Thread-safe.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace grpc {
class Channel;
class ClientContext;
}  // namespace grpc

namespace kvwarden {

// "etcd://host:port[,host:port...]" (or the bare list) as host:port strings;
// INVALID_ARGUMENT naming the bad part.
absl::StatusOr<std::vector<std::string>> ParseEtcdEndpoints(absl::string_view spec);

// The smallest key above every key starting with `prefix` (etcd's range_end for a prefix).
std::string PrefixEnd(absl::string_view prefix);

class EtcdClient {
 public:
  // TLS to etcd: PEM text. Empty ca_pem: plaintext.
  struct Tls {
    std::string ca_pem, cert_pem, key_pem;
    std::string server_name;  // overrides the name checked against etcd's certificate
    bool enabled() const { return !ca_pem.empty(); }
  };
  struct Options {
    std::vector<std::string> endpoints;  // host:port of each member, at least one
    absl::Duration call_timeout = absl::Seconds(2);
    Tls tls;
  };
  struct KeyValue {
    std::string key;
    std::string value;
    int64_t lease = 0;
    int64_t mod_revision = 0;
  };
  struct WatchEvent {
    bool deleted = false;
    KeyValue kv;  // a delete carries the key and its mod_revision only
  };
  // Stops a WatchPrefix in progress from another thread.
  class WatchCancel {
   public:
    // The watch in progress returns CANCELLED at once, and so does every later one.
    void Cancel();

   private:
    friend class EtcdClient;
    absl::Mutex mu_;
    grpc::ClientContext* active_ ABSL_GUARDED_BY(mu_) = nullptr;
    bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  };

  static absl::StatusOr<std::unique_ptr<EtcdClient>> Create(Options options);
  ~EtcdClient();

  // A lease of `ttl` (whole seconds, at least 1): its id.
  absl::StatusOr<int64_t> GrantLease(absl::Duration ttl);
  // Renews `lease` to its full TTL and returns it; NOT_FOUND once etcd no longer has the
  // lease (it expired, was revoked, or etcd lost it).
  absl::StatusOr<absl::Duration> KeepAlive(int64_t lease);
  absl::Status Revoke(int64_t lease);
  // `lease` 0: the key lives until deleted.
  absl::Status Put(absl::string_view key, absl::string_view value, int64_t lease = 0);
  absl::StatusOr<std::optional<KeyValue>> Get(absl::string_view key);
  // Every key starting with `prefix`, in key order; `revision` (if not null) gets the
  // store's revision they were read at (a watch from revision + 1 misses nothing).
  absl::StatusOr<std::vector<KeyValue>> GetPrefix(absl::string_view prefix,
                                                  int64_t* revision = nullptr);
  // How many keys went.
  absl::StatusOr<int64_t> Delete(absl::string_view key);
  // Writes `key` only if it does not exist (one transaction): whether it was written.
  absl::StatusOr<bool> PutIfAbsent(absl::string_view key, absl::string_view value,
                                   int64_t lease = 0);
  // Deletes `key` only if it holds `value` (one transaction): whether it was deleted.
  absl::StatusOr<bool> DeleteIfValue(absl::string_view key, absl::string_view value);

  // Watches every key under `prefix` from `start_revision` on, on one member, for up to
  // `window`, handing each batch of events to `on_events` (on this thread, in revision
  // order) as it arrives. Returns the revision to watch from next: OK at the window's end
  // (a silent window too: a frozen member is left at the next call, whose watch is not
  // created in time). OUT_OF_RANGE when etcd compacted `start_revision` away (read the
  // prefix again); UNAVAILABLE or DEADLINE_EXCEEDED when the member failed (the next
  // call goes to another one); CANCELLED through `cancel`.
  absl::StatusOr<int64_t> WatchPrefix(
      absl::string_view prefix, int64_t start_revision, absl::Duration window,
      const std::function<void(const std::vector<WatchEvent>&)>& on_events, WatchCancel* cancel);

  // host:port of the member the next call goes to first.
  std::string current_endpoint() const;

 private:
  struct Member;
  explicit EtcdClient(Options options);
  template <typename Fn>
  absl::Status Call(absl::string_view what, Fn fn);
  void MoveOnFrom(size_t member);

  const Options options_;
  std::vector<std::unique_ptr<Member>> members_;
  mutable absl::Mutex mu_;
  size_t current_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvwarden
