// AttachedPool: the tenant's chunks of a CPU pool mapped from the fds the daemon passes
// over its attach socket; pages are read (or written) in place under a transfer lease.

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/fd/seqpacket.h"
#include "common/fd/unique_fd.h"
#include "end_lease.h"
#include "kvwarden/data_plane.h"
#include "kvwarden/v1/transfer.pb.h"

#if defined(KVW_HAVE_CUDA)
#include <cuda_runtime.h>
#endif

namespace kvwarden {
namespace client {
namespace {

#if defined(KVW_HAVE_CUDA)
// Makes `ordinal` the current device for a scope and restores the caller's after.
class DeviceScope {
 public:
  explicit DeviceScope(int ordinal) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (ordinal >= 0 && ordinal != previous_) cudaSetDevice(ordinal);
  }
  ~DeviceScope() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = -1;
};
#endif

}  // namespace

struct AttachedPool::Impl {
  Client* client = nullptr;
  uint64_t lease = 0;
  AttachOptions options;
  DataPlaneInfo info;
  UniqueFd sock;
  // Set under mu by RefreshLocked, read without it by the accessors.
  std::atomic<bool> writable{false};
  std::atomic<uint64_t> attachment_id{0};

  mutable absl::Mutex mu;
  struct Chunk {
    uint64_t generation = 0;
    uint8_t* base = nullptr;
    size_t size = 0;
    bool device = false;  // opened from a CUDA IPC handle
    int ordinal = -1;     // this process's number for that device
  };
  absl::flat_hash_map<uint32_t, Chunk> chunks ABSL_GUARDED_BY(mu);

  ~Impl() {
    absl::MutexLock lock(&mu);
    for (auto& [id, c] : chunks) Unmap(c);
  }

  static void Unmap(const Chunk& c) {
    if (c.base == nullptr) return;
#if defined(KVW_HAVE_CUDA)
    if (c.device) {
      const DeviceScope on(c.ordinal);
      cudaIpcCloseMemHandle(c.base);
      return;
    }
#endif
    munmap(c.base, c.size);
  }

  // A GPU pool's chunk from its CUDA IPC handle (the daemon's cudaMalloc'd chunk), opened
  // on the daemon's device as this process numbers it (found by PCI bus id: the daemon's
  // ordinal means another device under another CUDA_VISIBLE_DEVICES), leaving the
  // caller's current device as it was.
  absl::StatusOr<Chunk> OpenDeviceChunk(const v1::AttachedChunk& c, const std::string& bus_id) const {
#if defined(KVW_HAVE_CUDA)
    cudaIpcMemHandle_t handle;
    if (c.cuda_ipc_handle().size() != sizeof(handle)) {
      return absl::InternalError(absl::StrCat("chunk ", c.chunk(), ": malformed CUDA IPC handle"));
    }
    std::memcpy(&handle, c.cuda_ipc_handle().data(), sizeof(handle));
    int ordinal = std::atoi(info.device.substr(info.device.find(':') + 1).c_str());
    if (!bus_id.empty() && cudaDeviceGetByPCIBusId(&ordinal, bus_id.c_str()) != cudaSuccess) {
      (void)cudaGetLastError();
      return absl::FailedPreconditionError(absl::StrCat(
          "pool '", options.pool, "' is on the daemon's device ", bus_id,
          ", which this process cannot see (CUDA_VISIBLE_DEVICES?)"));
    }
    const DeviceScope on(ordinal);
    void* dev = nullptr;
    if (cudaError_t e = cudaIpcOpenMemHandle(&dev, handle, cudaIpcMemLazyEnablePeerAccess);
        e != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat("cudaIpcOpenMemHandle (chunk ", c.chunk(), "): ", cudaGetErrorString(e)));
    }
    return Chunk{c.generation(), static_cast<uint8_t*>(dev), c.size(), true, ordinal};
#else
    (void)c, (void)bus_id;
    return absl::FailedPreconditionError(absl::StrCat(
        "pool '", options.pool, "' is on ", info.device,
        ": its chunks come as CUDA IPC handles and this client library was built without CUDA"));
#endif
  }

  // Asks for chunks not yet mapped (or renewed since) and maps them.
  absl::Status RefreshLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    v1::AttachRequest req;
    req.set_token(client->options().token);
    req.set_lease_id(lease);
    req.set_pool(options.pool);
    for (const auto& [id, c] : chunks) {
      v1::ChunkRef* k = req.add_known_chunks();
      k->set_chunk(id);
      k->set_generation(c.generation);
    }
    if (absl::Status s = SendRecord(sock.get(), req.SerializeAsString()); !s.ok()) return s;
    std::vector<UniqueFd> fds;
    absl::StatusOr<std::string> record = RecvRecord(sock.get(), &fds, options.timeout);
    if (!record.ok()) return record.status();
    v1::AttachResponse resp;
    if (!resp.ParseFromString(*record)) return absl::InternalError("attach answer does not parse");
    if (resp.code() != 0) {
      return absl::Status(static_cast<absl::StatusCode>(resp.code()), resp.message());
    }
    size_t with_fd = 0;
    for (const v1::AttachedChunk& c : resp.chunks()) with_fd += c.has_fd();
    if (absl::Status s = RecvFds(sock.get(), with_fd, &fds, options.timeout); !s.ok()) return s;
    attachment_id = resp.attachment_id();
    size_t next_fd = 0;
    for (const v1::AttachedChunk& c : resp.chunks()) {
      writable = c.writable();
      Chunk fresh;
      if (c.has_fd()) {
        const int prot = PROT_READ | (c.writable() ? PROT_WRITE : 0);
        // Pre-faulted (MAP_POPULATE): reads in place then run at memory speed from the
        // first one, with no page fault per 4 KiB. Huge pages where the kernel gives
        // them to shared memory (shmem_enabled=advise); a no-op elsewhere.
        void* p = mmap(nullptr, c.size(), prot, MAP_SHARED | MAP_POPULATE, fds[next_fd++].get(), 0);
        if (p == MAP_FAILED) {
          return absl::InternalError(
              absl::StrCat("mmap chunk ", c.chunk(), ": ", std::strerror(errno)));
        }
        (void)madvise(p, c.size(), MADV_HUGEPAGE);
        fresh = Chunk{c.generation(), static_cast<uint8_t*>(p), c.size(), false};
      } else {
        absl::StatusOr<Chunk> opened = OpenDeviceChunk(c, resp.cuda_pci_bus_id());
        if (!opened.ok()) return opened.status();
        fresh = *opened;
      }
      Chunk& slot = chunks[c.chunk()];
      Unmap(slot);
      slot = fresh;
    }
    return absl::OkStatus();
  }
};

AttachedPool::AttachedPool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AttachedPool::~AttachedPool() = default;

absl::StatusOr<std::unique_ptr<AttachedPool>> AttachedPool::Attach(Client* client,
                                                                   uint64_t lease_id,
                                                                   const AttachOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->client = client;
  impl->lease = lease_id;
  impl->options = options;
  absl::StatusOr<DataPlaneInfo> info = client->GetDataPlane(options.pool);
  if (!info.ok()) return info.status();
  impl->info = *std::move(info);
  if (impl->info.attach_socket.empty()) {
    return absl::FailedPreconditionError(
        "kvwardend runs without an attach socket (data_plane.attach_socket / --attach-socket)");
  }
  impl->sock.reset(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!impl->sock.valid())
    return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string& path = impl->info.attach_socket;
  if (path.size() >= sizeof(addr.sun_path))
    return absl::InvalidArgumentError("attach socket path too long");
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (connect(impl->sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect ", path, ": ", std::strerror(errno),
                                               " (attach works on the daemon's host only)"));
  }
  {
    absl::MutexLock lock(&impl->mu);
    if (absl::Status s = impl->RefreshLocked(); !s.ok()) return s;
  }
  return std::unique_ptr<AttachedPool>(new AttachedPool(std::move(impl)));
}

bool AttachedPool::writable() const { return impl_->writable; }
bool AttachedPool::on_device() const { return impl_->info.device != "cpu"; }
const Layout& AttachedPool::layout() const { return impl_->info.layout; }
uint64_t AttachedPool::attachment_id() const { return impl_->attachment_id; }
size_t AttachedPool::mapped_chunks() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->chunks.size();
}

struct AttachedPool::Mapping::State {
  Client* client = nullptr;
  Layout layout;
  TransferGrant grant;
  bool writable = false;
  std::vector<std::vector<uint8_t*>> pages;  // [layer][page]
  // A writable mapping of device chunks: the device (this process's number) whose queued
  // writes must land before the lease ends. -1 otherwise.
  int device_to_sync = -1;
  bool ended = false;
};

AttachedPool::Mapping::Mapping(std::unique_ptr<State> state) : state_(std::move(state)) {}
AttachedPool::Mapping::~Mapping() { (void)End(); }
uint64_t AttachedPool::Mapping::id() const { return state_->grant.id; }
absl::Time AttachedPool::Mapping::expires() const { return state_->grant.expires; }
uint64_t AttachedPool::Mapping::epoch() const { return state_->grant.epoch; }
uint32_t AttachedPool::Mapping::num_pages() const { return state_->grant.num_pages; }
uint32_t AttachedPool::Mapping::first_page() const { return state_->grant.first_page; }
const uint8_t* AttachedPool::Mapping::page(uint32_t layer, uint32_t page_index) const {
  return state_->pages.at(layer).at(page_index);
}
uint8_t* AttachedPool::Mapping::mutable_page(uint32_t layer, uint32_t page_index) const {
  return state_->writable ? state_->pages.at(layer).at(page_index) : nullptr;
}
PageView AttachedPool::Mapping::view(uint32_t layer) const {
  return PageView(state_->layout, state_->pages.at(layer), state_->grant.first_page);
}

absl::Status AttachedPool::Mapping::End() {
  if (state_ == nullptr || state_->ended) return absl::OkStatus();
  state_->ended = true;
  absl::Status synced;
#if defined(KVW_HAVE_CUDA)
  // Kernels the worker queued on its streams may still be writing these pages: once the
  // lease ends the daemon may compact or read them. Wait for the device first.
  if (state_->device_to_sync >= 0) {
    const DeviceScope on(state_->device_to_sync);
    if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) {
      synced = absl::InternalError(absl::StrCat(
          "cudaDeviceSynchronize before ending a writable mapping: ", cudaGetErrorString(e)));
    }
  }
#endif
  absl::Status ended = EndLease(*state_->client, state_->grant.id);
  return synced.ok() ? ended : synced;
}

absl::StatusOr<std::unique_ptr<AttachedPool::Mapping>> AttachedPool::Map(const PageRange& range,
                                                                         TransferMode mode) {
  Impl& d = *impl_;
  if (mode == TransferMode::kWrite && !d.writable) {
    return absl::PermissionDeniedError(
        "this attachment is read-only (a decode worker's lease); map for reading");
  }
  absl::MutexLock lock(&d.mu);
  std::vector<ChunkRef> known;
  for (const auto& [id, c] : d.chunks) known.push_back({id, c.generation});
  absl::StatusOr<TransferGrant> grant =
      d.client->BeginTransfer(d.lease, range, mode, 0, known, TransferPath::kInPlace);
  if (!grant.ok()) return grant.status();
  if (grant->instance_id != d.info.instance_id) {
    (void)d.client->EndTransfer(grant->id);
    return absl::UnavailableError("kvwardend restarted since this pool was attached; attach again");
  }
  for (const ChunkRef& c : grant->chunks) {
    auto it = d.chunks.find(c.chunk);
    if (it == d.chunks.end() || it->second.generation != c.generation) {
      if (absl::Status s = d.RefreshLocked(); !s.ok()) {
        (void)d.client->EndTransfer(grant->id);
        return s;
      }
      break;
    }
  }
  auto state = std::make_unique<Mapping::State>();
  state->client = d.client;
  state->layout = d.info.layout;
  state->writable = mode == TransferMode::kWrite && d.writable;
  for (const std::vector<PageRunInfo>& runs : grant->layers) {
    std::vector<uint8_t*>& pages = state->pages.emplace_back();
    for (const PageRunInfo& r : runs) {
      auto it = d.chunks.find(r.chunk);
      if (it == d.chunks.end()) {
        (void)d.client->EndTransfer(grant->id);
        return absl::InternalError(absl::StrCat("chunk ", r.chunk, " was not passed on attach"));
      }
      for (uint32_t i = 0; i < r.pages; ++i) {
        pages.push_back(it->second.base + r.offset + uint64_t{i} * grant->page_bytes);
      }
      if (state->writable && it->second.device) state->device_to_sync = it->second.ordinal;
    }
  }
  state->grant = *std::move(grant);
  return std::unique_ptr<Mapping>(new Mapping(std::move(state)));
}

}  // namespace client
}  // namespace kvwarden
