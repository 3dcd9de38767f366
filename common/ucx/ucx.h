#pragma once

// Move-only owners of every UCX handle kvwarden uses, shared by the daemon and the
// client library. Nothing here throws; failures come back as absl::Status naming the
// UCX call and ucs_status_string().
//
// Thread-safety: a Context made with `shared_by_threads` may register memory from any
// thread while a Worker progresses on another. A Worker and everything made from it
// (endpoints, remote keys, requests) belong to one thread at a time; Worker::Signal is
// the one call safe from any thread.

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace kvwarden::ucx {

absl::Status FromUcs(ucs_status_t status, absl::string_view what);

struct ContextOptions {
  // UCX_TLS for this context ("" = the UCX_TLS environment variable or UCX's default).
  // "shm" (or "sm") selects shared memory; "tcp" selects TCP.
  std::string transports;
  // UCX_ALLOC_PRIO for MemoryRegion::Allocate ("" = UCX's default order).
  std::string alloc_prio;
  // UCX_NET_DEVICES ("" = the environment variable or every device): which network
  // interfaces the worker listens on and advertises.
  std::string net_devices;
  bool wakeup = false;             // Worker::Wait (event fd) support
  // Whether this context issues RMA (a context that only exposes memory, the daemon's,
  // does not; UCX still serves peers' emulated RMA there: see BoundedTransports).
  bool rma = true;
  // UCX_POSIX_USE_PROC_LINK=y whatever the environment says: peers then open this
  // process's shared-memory segments through /proc/<pid>/fd, which the kernel allows
  // only to its own user and root (a daemon's boundary: see BoundedTransports).
  bool posix_proc_link = false;
  bool shared_by_threads = false;  // see the header comment
};

class Context {
 public:
  static absl::StatusOr<Context> Create(const ContextOptions& options);
  ucp_context_h get() const { return handle_.get(); }

 private:
  struct Deleter {
    void operator()(ucp_context_h h) const { ucp_cleanup(h); }
  };
  std::unique_ptr<std::remove_pointer_t<ucp_context_h>, Deleter> handle_;
};

class Worker {
 public:
  static absl::StatusOr<Worker> Create(const Context& context);
  ucp_worker_h get() const { return handle_.get(); }
  // ucp_worker_get_address(): what a peer needs to create an endpoint to this worker.
  absl::StatusOr<std::string> Address() const;
  unsigned Progress() const { return ucp_worker_progress(get()); }
  // Progresses until there is nothing to do, then sleeps on the worker's event fd for at
  // most `timeout` (needs ContextOptions::wakeup).
  void ProgressOrWait(absl::Duration timeout) const;
  // Wakes a ProgressOrWait on another thread.
  void Signal() const { ucp_worker_signal(get()); }

 private:
  struct Deleter {
    void operator()(ucp_worker_h h) const { ucp_worker_destroy(h); }
  };
  std::unique_ptr<std::remove_pointer_t<ucp_worker_h>, Deleter> handle_;
};

// Waits for a non-blocking operation's request (progressing `worker`) and frees it.
// A deadline that passes cancels the request and returns DEADLINE_EXCEEDED.
absl::Status Wait(const Worker& worker, ucs_status_ptr_t request, absl::string_view what,
                  absl::Time deadline = absl::InfiniteFuture());
absl::Status Wait(ucp_worker_h worker, ucs_status_ptr_t request, absl::string_view what,
                  absl::Time deadline = absl::InfiniteFuture());

// A registered memory region and its packed remote key.
class MemoryRegion {
 public:
  static absl::StatusOr<MemoryRegion> Register(const Context& context, void* address,
                                               size_t length);
  // Memory UCX allocates (ucp_mem_map ALLOCATE): shared-memory transports can then move
  // bytes to and from it with plain copies by the peer, which registered memory of our
  // own does not allow with Debian's UCX 1.13 (its RMA on such memory is emulated with
  // active messages the owner must progress).
  static absl::StatusOr<MemoryRegion> Allocate(const Context& context, size_t length);
  MemoryRegion() = default;
  MemoryRegion(MemoryRegion&&) noexcept;
  MemoryRegion& operator=(MemoryRegion&&) noexcept;
  ~MemoryRegion();
  const std::string& packed_rkey() const { return packed_rkey_; }
  uint64_t address() const { return reinterpret_cast<uint64_t>(address_); }
  void* data() const { return address_; }
  size_t length() const { return length_; }

 private:
  static absl::StatusOr<MemoryRegion> Map(const Context& context, void* address, size_t length,
                                          bool allocate);
  void Reset();
  ucp_context_h context_ = nullptr;
  ucp_mem_h memh_ = nullptr;
  void* address_ = nullptr;
  size_t length_ = 0;
  std::string packed_rkey_;
};

// An endpoint to a remote worker, closed (forcibly: the peer may be gone) on destruction.
// With `peer_errors` a transport error marks it failed() instead of being fatal to UCX;
// that mode rules out UCX's shared-memory transports.
class Endpoint {
 public:
  static absl::StatusOr<Endpoint> Connect(const Worker& worker, absl::string_view address,
                                          bool peer_errors);
  Endpoint() = default;
  Endpoint(Endpoint&&) noexcept;
  Endpoint& operator=(Endpoint&&) noexcept;
  ~Endpoint();
  ucp_ep_h get() const { return ep_; }
  bool failed() const { return state_ != nullptr && state_->failed.load(); }
  // Waits for every operation issued on this endpoint to complete remotely.
  absl::Status Flush(absl::Time deadline);
  // ucp_ep_print_info(): the lanes and transports UCX chose.
  std::string Describe() const;

 private:
  struct State {
    std::atomic<bool> failed{false};
  };
  void Close();
  ucp_worker_h worker_ = nullptr;
  bool peer_errors_ = false;
  ucp_ep_h ep_ = nullptr;
  std::unique_ptr<State> state_;  // stable address for the error callback
};

// A peer's remote key unpacked for one endpoint.
class RemoteKey {
 public:
  static absl::StatusOr<RemoteKey> Unpack(const Endpoint& ep, absl::string_view packed);
  ucp_rkey_h get() const { return handle_.get(); }

 private:
  struct Deleter {
    void operator()(ucp_rkey_h h) const { ucp_rkey_destroy(h); }
  };
  std::unique_ptr<std::remove_pointer_t<ucp_rkey_h>, Deleter> handle_;
};

// Whether a UCX_TLS value keeps the shared-memory transports (so peer error handling
// must stay off for them to be used).
bool UsesSharedMemory(absl::string_view transports);

// The UCX_TLS a process that exposes memory to untrusted peers may run: "posix" and
// "self" ("shm"/"sm" = posix), normalised and sorted; "" = "posix,self". Anything else
// is INVALID_ARGUMENT with the reason. Why: over tcp UCX writes a peer's PUT wherever the
// peer says and serves emulated GET from any address; cma and xpmem reach the whole
// process; and even over shared memory UCX serves a peer's emulated RMA at any address
// (measured: memory it cannot map, or a forged key). So the boundary is who can connect:
// posix with /proc links (ContextOptions::posix_proc_link) admits only the process's own
// user, who can open its chunk files anyway; sysv segments would admit that user without
// the /proc check; network transports would admit anyone.
absl::StatusOr<std::string> BoundedTransports(const std::string& configured);

}  // namespace kvwarden::ucx
