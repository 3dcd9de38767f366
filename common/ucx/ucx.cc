#include "common/ucx/ucx.h"

#include <poll.h>

#include <algorithm>
#include <cstdio>
#include <vector>
#include <cstdlib>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace kvwarden::ucx {

absl::Status FromUcs(ucs_status_t status, absl::string_view what) {
  if (status == UCS_OK) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", ucs_status_string(status));
  switch (status) {
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
      return absl::ResourceExhaustedError(msg);
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
      return absl::InvalidArgumentError(msg);
    case UCS_ERR_TIMED_OUT:
      return absl::DeadlineExceededError(msg);
    case UCS_ERR_CANCELED:
      return absl::CancelledError(msg);
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_UNREACHABLE:
      return absl::FailedPreconditionError(msg);
    default:
      // Connection resets, endpoint timeouts, shared memory gone: the peer went away.
      return absl::UnavailableError(msg);
  }
}

bool UsesSharedMemory(absl::string_view transports) {
  if (transports.empty()) return true;  // UCX's default includes them
  for (absl::string_view t : absl::StrSplit(transports, ',')) {
    if (absl::StartsWith(t, "^")) return true;  // an exclusion list keeps the rest
    if (t == "all" || t == "sm" || t == "shm" || t == "posix" || t == "sysv" || t == "cma" ||
        t == "xpmem" || t == "knem") {
      return true;
    }
  }
  return false;
}

absl::StatusOr<std::string> BoundedTransports(const std::string& configured) {
  if (configured.empty()) return std::string("posix,self");
  std::vector<std::string> out;
  for (absl::string_view t : absl::StrSplit(configured, ',')) {
    if (t == "shm" || t == "sm" || t == "posix") {
      out.push_back("posix");
    } else if (t == "self") {
      out.emplace_back(t);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", t, "' is refused: the daemon's UCX runs only posix shared memory (and self), "
          "which admits only its own user; over other transports UCX lets a peer read and "
          "write any of its memory. Network workers use the TCP data path "
          "(data_plane.tcp_listen)"));
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return absl::StrJoin(out, ",");
}

absl::StatusOr<Context> Context::Create(const ContextOptions& options) {
  ucp_config_t* config = nullptr;
  if (absl::Status s = FromUcs(ucp_config_read(nullptr, nullptr, &config), "ucp_config_read");
      !s.ok()) {
    return s;
  }
  absl::Status modified = absl::OkStatus();
  if (!options.transports.empty()) {
    modified = FromUcs(ucp_config_modify(config, "TLS", options.transports.c_str()),
                       absl::StrCat("UCX_TLS=", options.transports));
  }
  if (modified.ok() && !options.alloc_prio.empty()) {
    modified = FromUcs(ucp_config_modify(config, "ALLOC_PRIO", options.alloc_prio.c_str()),
                       absl::StrCat("UCX_ALLOC_PRIO=", options.alloc_prio));
  }
  if (modified.ok() && options.posix_proc_link) {
    modified = FromUcs(ucp_config_modify(config, "POSIX_USE_PROC_LINK", "y"),
                       "UCX_POSIX_USE_PROC_LINK=y");
  }
  if (modified.ok() && !options.net_devices.empty()) {
    modified = FromUcs(ucp_config_modify(config, "NET_DEVICES", options.net_devices.c_str()),
                       absl::StrCat("UCX_NET_DEVICES=", options.net_devices));
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = (options.rma ? UCP_FEATURE_RMA : UCP_FEATURE_AM) |
                    (options.wakeup ? UCP_FEATURE_WAKEUP : 0);
  params.mt_workers_shared = options.shared_by_threads ? 1 : 0;
  Context ctx;
  ucp_context_h handle = nullptr;
  if (modified.ok()) modified = FromUcs(ucp_init(&params, config, &handle), "ucp_init");
  ucp_config_release(config);
  if (!modified.ok()) return modified;
  ctx.handle_.reset(handle);
  return ctx;
}

absl::StatusOr<Worker> Worker::Create(const Context& context) {
  ucp_worker_params_t params{};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  params.thread_mode = UCS_THREAD_MODE_SINGLE;
  ucp_worker_h handle = nullptr;
  if (absl::Status s =
          FromUcs(ucp_worker_create(context.get(), &params, &handle), "ucp_worker_create");
      !s.ok()) {
    return s;
  }
  Worker w;
  w.handle_.reset(handle);
  return w;
}

absl::StatusOr<std::string> Worker::Address() const {
  ucp_address_t* address = nullptr;
  size_t length = 0;
  if (absl::Status s =
          FromUcs(ucp_worker_get_address(get(), &address, &length), "ucp_worker_get_address");
      !s.ok()) {
    return s;
  }
  std::string out(reinterpret_cast<const char*>(address), length);
  ucp_worker_release_address(get(), address);
  return out;
}

void Worker::ProgressOrWait(absl::Duration timeout) const {
  while (Progress() != 0) {
  }
  // Arm, then sleep on the event fd: UCS_ERR_BUSY means events arrived meanwhile.
  if (ucp_worker_arm(get()) != UCS_OK) return;
  int fd = -1;
  if (ucp_worker_get_efd(get(), &fd) != UCS_OK) return;
  pollfd p{fd, POLLIN, 0};
  poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
}

absl::Status Wait(const Worker& worker, ucs_status_ptr_t request, absl::string_view what,
                  absl::Time deadline) {
  return Wait(worker.get(), request, what, deadline);
}

absl::Status Wait(ucp_worker_h worker, ucs_status_ptr_t request, absl::string_view what,
                  absl::Time deadline) {
  if (request == nullptr) return absl::OkStatus();
  if (UCS_PTR_IS_ERR(request)) return FromUcs(UCS_PTR_STATUS(request), what);
  ucs_status_t status;
  size_t spins = 0;
  while ((status = ucp_request_check_status(request)) == UCS_INPROGRESS) {
    ucp_worker_progress(worker);
    // Checking the clock on every spin would cost more than a small transfer.
    if (++spins % 1024 == 0 && absl::Now() > deadline) {
      ucp_request_cancel(worker, request);
      while (ucp_request_check_status(request) == UCS_INPROGRESS) ucp_worker_progress(worker);
      ucp_request_free(request);
      return absl::DeadlineExceededError(absl::StrCat(what, ": timed out"));
    }
  }
  ucp_request_free(request);
  return FromUcs(status, what);
}

absl::StatusOr<MemoryRegion> MemoryRegion::Map(const Context& context, void* address, size_t length,
                                               bool allocate) {
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  params.address = address;
  params.length = length;
  params.flags = allocate ? UCP_MEM_MAP_ALLOCATE : 0;
  MemoryRegion r;
  r.context_ = context.get();
  if (absl::Status s = FromUcs(ucp_mem_map(context.get(), &params, &r.memh_),
                               allocate ? "ucp_mem_map(ALLOCATE)" : "ucp_mem_map");
      !s.ok()) {
    r.memh_ = nullptr;
    return s;
  }
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  if (absl::Status s = FromUcs(ucp_mem_query(r.memh_, &attr), "ucp_mem_query"); !s.ok()) return s;
  r.address_ = attr.address;
  r.length_ = allocate ? attr.length : length;
  void* packed = nullptr;
  size_t packed_size = 0;
  if (absl::Status s =
          FromUcs(ucp_rkey_pack(context.get(), r.memh_, &packed, &packed_size), "ucp_rkey_pack");
      !s.ok()) {
    return s;
  }
  r.packed_rkey_.assign(static_cast<const char*>(packed), packed_size);
  ucp_rkey_buffer_release(packed);
  return r;
}

absl::StatusOr<MemoryRegion> MemoryRegion::Register(const Context& context, void* address,
                                                    size_t length) {
  return Map(context, address, length, /*allocate=*/false);
}

absl::StatusOr<MemoryRegion> MemoryRegion::Allocate(const Context& context, size_t length) {
  return Map(context, nullptr, length, /*allocate=*/true);
}

MemoryRegion::MemoryRegion(MemoryRegion&& o) noexcept { *this = std::move(o); }

MemoryRegion& MemoryRegion::operator=(MemoryRegion&& o) noexcept {
  if (this != &o) {
    Reset();
    context_ = std::exchange(o.context_, nullptr);
    memh_ = std::exchange(o.memh_, nullptr);
    address_ = std::exchange(o.address_, nullptr);
    length_ = std::exchange(o.length_, 0);
    packed_rkey_ = std::move(o.packed_rkey_);
  }
  return *this;
}

MemoryRegion::~MemoryRegion() { Reset(); }

void MemoryRegion::Reset() {
  if (memh_ != nullptr) ucp_mem_unmap(context_, memh_);
  memh_ = nullptr;
}

namespace {

void OnEndpointError(void* arg, ucp_ep_h, ucs_status_t) {
  static_cast<std::atomic<bool>*>(arg)->store(true);
}

}  // namespace

absl::StatusOr<Endpoint> Endpoint::Connect(const Worker& worker, absl::string_view address,
                                           bool peer_errors) {
  Endpoint ep;
  ep.state_ = std::make_unique<State>();
  ep.worker_ = worker.get();
  ep.peer_errors_ = peer_errors;
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  params.address = reinterpret_cast<const ucp_address_t*>(address.data());
  params.err_mode = peer_errors ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
  if (peer_errors) {
    params.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.err_handler.cb = &OnEndpointError;
    params.err_handler.arg = &ep.state_->failed;
  }
  if (absl::Status s = FromUcs(ucp_ep_create(worker.get(), &params, &ep.ep_), "ucp_ep_create");
      !s.ok()) {
    ep.ep_ = nullptr;
    return s;
  }
  return ep;
}

Endpoint::Endpoint(Endpoint&& o) noexcept { *this = std::move(o); }

Endpoint& Endpoint::operator=(Endpoint&& o) noexcept {
  if (this != &o) {
    Close();
    worker_ = std::exchange(o.worker_, nullptr);
    peer_errors_ = o.peer_errors_;
    ep_ = std::exchange(o.ep_, nullptr);
    state_ = std::move(o.state_);
  }
  return *this;
}

Endpoint::~Endpoint() { Close(); }

void Endpoint::Close() {
  if (ep_ == nullptr) return;
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  // Force-closing needs peer error handling on both sides; otherwise flush, but never
  // wait long for a peer that may be gone.
  param.flags = peer_errors_ ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  ucs_status_ptr_t req = ucp_ep_close_nbx(ep_, &param);
  if (req != nullptr && !UCS_PTR_IS_ERR(req)) {
    const absl::Time deadline = absl::Now() + absl::Seconds(1);
    while (ucp_request_check_status(req) == UCS_INPROGRESS && absl::Now() < deadline) {
      ucp_worker_progress(worker_);
    }
    if (ucp_request_check_status(req) != UCS_INPROGRESS) ucp_request_free(req);
  }
  ep_ = nullptr;
}

absl::Status Endpoint::Flush(absl::Time deadline) {
  ucp_request_param_t param{};
  return Wait(worker_, ucp_ep_flush_nbx(ep_, &param), "ucp_ep_flush_nbx", deadline);
}

std::string Endpoint::Describe() const {
  if (ep_ == nullptr) return "";
  char* text = nullptr;
  size_t size = 0;
  FILE* f = open_memstream(&text, &size);
  if (f == nullptr) return "";
  ucp_ep_print_info(ep_, f);
  fclose(f);
  std::string out(text, size);
  free(text);
  return out;
}

absl::StatusOr<RemoteKey> RemoteKey::Unpack(const Endpoint& ep, absl::string_view packed) {
  ucp_rkey_h handle = nullptr;
  if (packed.empty()) return absl::InvalidArgumentError("remote key: empty");
  if (absl::Status s =
          FromUcs(ucp_ep_rkey_unpack(ep.get(), packed.data(), &handle), "ucp_ep_rkey_unpack");
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("remote key does not unpack: ", s.message()));
  }
  RemoteKey k;
  k.handle_.reset(handle);
  return k;
}

}  // namespace kvwarden::ucx
