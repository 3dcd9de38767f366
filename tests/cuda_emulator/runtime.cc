// The emulated CUDA runtime: memory, streams, events, IPC handles (cuda_runtime.h in
// include/ says what is emulated and how strictly).
//
// Thread-safety: one mutex guards all state, and device work (kernels, copies, sets)
// runs under it on whichever host thread waits for it: the emulated device does one
// operation at a time, in each stream's order.

#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "tests/cuda_emulator/grid_runner.h"

namespace kvw_cuda_emulator {
namespace {

constexpr uint64_t kIpcMagic = 0x6b76772d63756461ull;  // "kvw-cuda"
constexpr size_t kAlign = 256;                         // cudaMalloc's alignment
constexpr size_t kPoisonWhole = size_t{64} << 20;      // bigger: poison the ends only
constexpr size_t kPoisonEnds = size_t{1} << 20;

size_t PageBytes() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}
size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

enum class Kind { kDevice, kImported, kPinned };

// A device allocation is a memfd (so another process can open it by IPC handle)
// mapped in pages, with a guard page after it; its base sits 256-byte aligned at the
// end, so a kernel running past the end faults. Host pointers never see it readable:
// its pages are PROT_NONE except while the emulated device works.
struct Allocation {
  Kind kind = Kind::kDevice;
  uint8_t* map = nullptr;  // start of the mapping (pages)
  size_t file_bytes = 0;   // mapped bytes before the guard page
  uint8_t* base = nullptr;
  size_t bytes = 0;
  int fd = -1;  // kDevice only
};

struct Op {
  uint64_t seq;
  std::function<void()> run;
};

struct Stream {
  unsigned flags = cudaStreamDefault;
  std::deque<Op> queue;
};

struct Event {
  Stream* stream = nullptr;  // where it was last recorded
  uint64_t seq = 0;
  bool recorded = false, complete = false;
  std::chrono::steady_clock::time_point at;
};

struct Ipc {
  uint64_t magic;
  int32_t pid;
  int32_t fd;
  uint64_t offset;  // base - map
  uint64_t bytes;
  uint64_t file_bytes;
};
static_assert(sizeof(Ipc) <= sizeof(cudaIpcMemHandle_t));

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 0) : fallback;
}

class Device {
 public:
  std::mutex mu;
  std::map<uintptr_t, Allocation> allocations;  // by base
  Stream legacy;
  std::set<Stream*> streams;
  std::set<Event*> events;
  uint64_t next_seq = 1;
  uint64_t used = 0;
  const bool protect = EnvNumber("KVW_CUDA_EMULATOR_PROTECT", 1) != 0;
  const int count = static_cast<int>(EnvNumber("KVW_CUDA_EMULATOR_DEVICES", 1));
  const uint64_t memory = EnvNumber("KVW_CUDA_EMULATOR_MEMORY", uint64_t{16} << 30);
  const bool refuse_pinned = EnvNumber("KVW_CUDA_EMULATOR_NO_PINNED", 0) != 0;
};

Device& Dev() {
  static Device* d = new Device;  // outlives static destructors that free CUDA memory
  return *d;
}

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;

cudaError_t Error(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

// An error the program made (a GPU may not say so as clearly): said on stderr too.
cudaError_t Misuse(cudaError_t e, const char* fmt, ...) {
  std::va_list args;
  va_start(args, fmt);
  std::fprintf(stderr, "kvw cuda emulator: ");
  std::vfprintf(stderr, fmt, args);
  std::fprintf(stderr, "\n");
  va_end(args);
  return Error(e);
}

// Makes device pages accessible for the scope of device work.
class DeviceWork {
 public:
  explicit DeviceWork(Device& d) : d_(d) { Set(PROT_READ | PROT_WRITE); }
  ~DeviceWork() { Set(PROT_NONE); }
  DeviceWork(const DeviceWork&) = delete;
  DeviceWork& operator=(const DeviceWork&) = delete;

 private:
  void Set(int prot) {
    if (!d_.protect) return;
    for (auto& [base, a] : d_.allocations) {
      if (a.kind != Kind::kPinned) mprotect(a.map, a.file_bytes, prot);
    }
  }
  Device& d_;
};

void Drain(Device& d, Stream* s, uint64_t upto = UINT64_MAX) {
  if (s->queue.empty() || s->queue.front().seq > upto) return;
  DeviceWork work(d);
  while (!s->queue.empty() && s->queue.front().seq <= upto) {
    Op op = std::move(s->queue.front());
    s->queue.pop_front();
    op.run();
  }
}

void DrainAll(Device& d) {
  for (Stream* s : d.streams) Drain(d, s);
  Drain(d, &d.legacy);
}

// Work queued on the legacy stream waits for every blocking stream, and work on a
// blocking stream for the legacy stream; non-blocking streams wait for nothing.
void Enqueue(Device& d, Stream* s, std::function<void()> run) {
  if (s == &d.legacy) {
    for (Stream* other : d.streams) {
      if ((other->flags & cudaStreamNonBlocking) == 0) Drain(d, other);
    }
  } else if ((s->flags & cudaStreamNonBlocking) == 0) {
    Drain(d, &d.legacy);
  }
  s->queue.push_back({d.next_seq++, std::move(run)});
}

Stream* FindStream(Device& d, cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return &d.legacy;
  auto* stream = reinterpret_cast<Stream*>(s);
  return d.streams.count(stream) ? stream : nullptr;
}

const Allocation* Containing(Device& d, const void* p) {
  const auto at = reinterpret_cast<uintptr_t>(p);
  auto it = d.allocations.upper_bound(at);
  if (it == d.allocations.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  return at < reinterpret_cast<uintptr_t>(a.base) + a.bytes ? &a : nullptr;
}

enum class Space { kDevice, kPinned, kPageable, kOverrun };

Space Classify(Device& d, const void* p, size_t bytes) {
  const Allocation* a = Containing(d, p);
  if (a == nullptr) return Space::kPageable;
  if (static_cast<const uint8_t*>(p) + bytes > a->base + a->bytes) return Space::kOverrun;
  return a->kind == Kind::kPinned ? Space::kPinned : Space::kDevice;
}

const char* SpaceName(Space s) {
  switch (s) {
    case Space::kDevice:
      return "device memory";
    case Space::kPinned:
      return "pinned host memory";
    case Space::kPageable:
      return "pageable host memory";
    case Space::kOverrun:
      return "a range running past its allocation";
  }
  return "?";
}

bool IsHost(Space s) { return s == Space::kPinned || s == Space::kPageable; }

// Checks a copy's pointers against its direction; resolves cudaMemcpyDefault.
cudaError_t CheckCopy(Device& d, const char* api, void* dst, const void* src, size_t bytes,
                      cudaMemcpyKind* kind, Space* dst_space, Space* src_space) {
  *dst_space = Classify(d, dst, bytes);
  *src_space = Classify(d, src, bytes);
  if (*dst_space == Space::kOverrun || *src_space == Space::kOverrun) {
    return Misuse(cudaErrorInvalidValue, "%s of %zu bytes: %s is %s", api, bytes,
                  *dst_space == Space::kOverrun ? "dst" : "src", SpaceName(Space::kOverrun));
  }
  const bool dst_dev = *dst_space == Space::kDevice, src_dev = *src_space == Space::kDevice;
  if (*kind == cudaMemcpyDefault) {
    *kind = dst_dev ? (src_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                    : (src_dev ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  }
  const bool want_dst_dev = *kind == cudaMemcpyHostToDevice || *kind == cudaMemcpyDeviceToDevice;
  const bool want_src_dev = *kind == cudaMemcpyDeviceToHost || *kind == cudaMemcpyDeviceToDevice;
  if (*kind < cudaMemcpyHostToHost || *kind > cudaMemcpyDeviceToDevice) {
    return Misuse(cudaErrorInvalidMemcpyDirection, "%s: unknown direction %d", api,
                  static_cast<int>(*kind));
  }
  if (dst_dev != want_dst_dev || src_dev != want_src_dev) {
    return Misuse(cudaErrorInvalidValue, "%s kind %d: dst is %s, src is %s", api,
                  static_cast<int>(*kind), SpaceName(*dst_space), SpaceName(*src_space));
  }
  return cudaSuccess;
}

std::function<void()> CopyOp(void* dst, const void* src, size_t bytes) {
  return [dst, src, bytes] { std::memcpy(dst, src, bytes); };
}
std::function<void()> SnapshotCopyOp(void* dst, const void* src, size_t bytes) {
  auto copy = std::make_shared<std::vector<uint8_t>>(static_cast<const uint8_t*>(src),
                                                     static_cast<const uint8_t*>(src) + bytes);
  return [dst, copy] { std::memcpy(dst, copy->data(), copy->size()); };
}

void Poison(Device& d, const Allocation& a) {
  DeviceWork work(d);
  if (a.bytes <= kPoisonWhole) {
    std::memset(a.base, 0xA5, a.bytes);
  } else {
    std::memset(a.base, 0xA5, kPoisonEnds);
    std::memset(a.base + a.bytes - kPoisonEnds, 0xA5, kPoisonEnds);
  }
}

// Maps `file_bytes` of `fd` with a guard page after them; null on failure.
uint8_t* MapWithGuard(int fd, size_t file_bytes) {
  void* reserve = mmap(nullptr, file_bytes + PageBytes(), PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserve == MAP_FAILED) return nullptr;
  void* m = mmap(reserve, file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
  if (m == MAP_FAILED) {
    munmap(reserve, file_bytes + PageBytes());
    return nullptr;
  }
  return static_cast<uint8_t*>(m);
}

void Protect(Device& d, const Allocation& a) {
  if (d.protect) mprotect(a.map, a.file_bytes, PROT_NONE);
}

}  // namespace

void EnqueueGrid(dim3 grid, dim3 block, size_t dynamic_shared, cudaStream_t stream,
                 std::function<void()> body) {
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535 || threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 ||
      block.z > 64) {
    Error(cudaErrorInvalidConfiguration);
    return;
  }
  if (dynamic_shared > 48 * 1024) {
    Error(cudaErrorInvalidValue);
    return;
  }
  Stream* s = FindStream(d, stream);
  if (s == nullptr) {
    Misuse(cudaErrorInvalidResourceHandle, "kernel launch on an unknown stream");
    return;
  }
  Enqueue(d, s, [grid, block, body = std::move(body)] { RunGrid(grid, block, body); });
}

}  // namespace kvw_cuda_emulator

using kvw_cuda_emulator::Dev;
using kvw_cuda_emulator::Device;
using kvw_cuda_emulator::Error;
using kvw_cuda_emulator::Misuse;

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return Error(cudaErrorInvalidValue);
  *count = Dev().count;
  return *count > 0 ? cudaSuccess : Error(cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= Dev().count) return Error(cudaErrorInvalidDevice);
  kvw_cuda_emulator::t_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return Error(cudaErrorInvalidValue);
  *device = kvw_cuda_emulator::t_device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetPCIBusId(char* pci_bus_id, int len, int device) {
  if (pci_bus_id == nullptr || len < 13) return Error(cudaErrorInvalidValue);
  if (device < 0 || device >= Dev().count) return Error(cudaErrorInvalidDevice);
  std::snprintf(pci_bus_id, static_cast<size_t>(len), "0000:%02x:00.0", device);
  return cudaSuccess;
}

cudaError_t cudaDeviceGetByPCIBusId(int* device, const char* pci_bus_id) {
  unsigned bus = 0;
  if (device == nullptr || pci_bus_id == nullptr ||
      std::sscanf(pci_bus_id, "0000:%x:00.0", &bus) != 1 || static_cast<int>(bus) >= Dev().count) {
    return Error(cudaErrorInvalidValue);
  }
  *device = static_cast<int>(bus);
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  kvw_cuda_emulator::DrainAll(d);
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = kvw_cuda_emulator::t_last_error;
  kvw_cuda_emulator::t_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return kvw_cuda_emulator::t_last_error; }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer:
      return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection:
      return "invalid copy direction for memcpy";
    case cudaErrorNoDevice:
      return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorMapBufferObjectFailed:
      return "mapping of buffer object failed";
  }
  return "unrecognized error code";
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  using namespace kvw_cuda_emulator;
  if (ptr == nullptr) return Error(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  const size_t rounded = RoundUp(bytes, kAlign), file_bytes = RoundUp(rounded, PageBytes());
  if (rounded < bytes || d.used + file_bytes > d.memory) return Error(cudaErrorMemoryAllocation);
  const int fd = memfd_create("kvw-cuda-emulator", MFD_CLOEXEC);
  if (fd < 0) return Error(cudaErrorMemoryAllocation);
  uint8_t* map =
      ftruncate(fd, static_cast<off_t>(file_bytes)) == 0 ? MapWithGuard(fd, file_bytes) : nullptr;
  if (map == nullptr) {
    close(fd);
    return Error(cudaErrorMemoryAllocation);
  }
  Allocation a{Kind::kDevice, map, file_bytes, map + file_bytes - rounded, bytes, fd};
  Protect(d, a);
  d.allocations[reinterpret_cast<uintptr_t>(a.base)] = a;
  d.used += file_bytes;
  Poison(d, a);  // cudaMalloc'd memory is not zeroed
  *ptr = a.base;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  using namespace kvw_cuda_emulator;
  if (ptr == nullptr) return cudaSuccess;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == d.allocations.end() || it->second.kind != Kind::kDevice) {
    return Misuse(cudaErrorInvalidValue, "cudaFree(%p): not the base of a cudaMalloc'd allocation",
                  ptr);
  }
  DrainAll(d);  // cudaFree synchronises the device
  const Allocation a = it->second;
  d.allocations.erase(it);
  munmap(a.map, a.file_bytes + PageBytes());
  close(a.fd);
  d.used -= a.file_bytes;
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  using namespace kvw_cuda_emulator;
  if (ptr == nullptr) return Error(cudaErrorInvalidValue);
  *ptr = nullptr;
  Device& d = Dev();
  if (d.refuse_pinned) return Error(cudaErrorMemoryAllocation);
  std::lock_guard<std::mutex> lock(d.mu);
  const size_t file_bytes = RoundUp(bytes == 0 ? 1 : bytes, PageBytes());
  void* m = mmap(nullptr, file_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return Error(cudaErrorMemoryAllocation);
  auto* map = static_cast<uint8_t*>(m);
  d.allocations[reinterpret_cast<uintptr_t>(map)] =
      Allocation{Kind::kPinned, map, file_bytes, map, bytes, -1};
  *ptr = map;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  using namespace kvw_cuda_emulator;
  if (ptr == nullptr) return cudaSuccess;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == d.allocations.end() || it->second.kind != Kind::kPinned) {
    return Misuse(cudaErrorInvalidValue, "cudaFreeHost(%p): not from cudaMallocHost", ptr);
  }
  DrainAll(d);
  munmap(it->second.map, it->second.file_bytes);
  d.allocations.erase(it);
  return cudaSuccess;
}

// Synchronous copies as CUDA documents them: pageable host-to-device returns once the
// bytes are staged (the copy itself may still be queued), pinned host-to-device and
// device-to-host return when done, device-to-device does not wait.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  using namespace kvw_cuda_emulator;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  Space ds, ss;
  if (cudaError_t e = CheckCopy(d, "cudaMemcpy", dst, src, bytes, &kind, &ds, &ss);
      e != cudaSuccess)
    return e;
  if (bytes == 0) return cudaSuccess;
  switch (kind) {
    case cudaMemcpyHostToDevice:
      if (ss == Space::kPageable) {
        Drain(d, &d.legacy);
        Enqueue(d, &d.legacy, SnapshotCopyOp(dst, src, bytes));
      } else {
        Enqueue(d, &d.legacy, CopyOp(dst, src, bytes));
        Drain(d, &d.legacy);
      }
      break;
    case cudaMemcpyDeviceToHost:
      Enqueue(d, &d.legacy, CopyOp(dst, src, bytes));
      Drain(d, &d.legacy);
      break;
    case cudaMemcpyDeviceToDevice:
      Enqueue(d, &d.legacy, CopyOp(dst, src, bytes));
      break;
    default:
      Drain(d, &d.legacy);
      std::memcpy(dst, src, bytes);
  }
  return cudaSuccess;
}

// Asynchronous copies: queued; pageable sources are staged at the call, and a copy into
// pageable memory is synchronous (the driver cannot DMA into it later).
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  using namespace kvw_cuda_emulator;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  Stream* s = FindStream(d, stream);
  if (s == nullptr)
    return Misuse(cudaErrorInvalidResourceHandle, "cudaMemcpyAsync on an unknown stream");
  Space ds, ss;
  if (cudaError_t e = CheckCopy(d, "cudaMemcpyAsync", dst, src, bytes, &kind, &ds, &ss);
      e != cudaSuccess) {
    return e;
  }
  if (bytes == 0) return cudaSuccess;
  Enqueue(d, s, ss == Space::kPageable ? SnapshotCopyOp(dst, src, bytes) : CopyOp(dst, src, bytes));
  if (ds == Space::kPageable) Drain(d, s);
  return cudaSuccess;
}

// Rows of `width` bytes, `height` of them, `pitch` apart; both sides checked as one range.
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream) {
  using namespace kvw_cuda_emulator;
  if (width > dpitch || width > spitch) return Error(cudaErrorInvalidValue);
  if (width == 0 || height == 0) return cudaSuccess;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  Stream* s = FindStream(d, stream);
  if (s == nullptr)
    return Misuse(cudaErrorInvalidResourceHandle, "cudaMemcpy2DAsync on an unknown stream");
  // Each side checked as one span, from its first row's start to its last row's end.
  // kvwarden only copies device to device this way; other directions are refused.
  const Space ds = Classify(d, dst, dpitch * (height - 1) + width);
  const Space ss = Classify(d, src, spitch * (height - 1) + width);
  if (ds != Space::kDevice || ss != Space::kDevice ||
      (kind != cudaMemcpyDeviceToDevice && kind != cudaMemcpyDefault)) {
    return Misuse(cudaErrorInvalidValue,
                  "cudaMemcpy2DAsync kind %d: dst is %s, src is %s (device to device only)",
                  static_cast<int>(kind), SpaceName(ds), SpaceName(ss));
  }
  Enqueue(d, s, [=] {
    for (size_t row = 0; row < height; ++row) {
      std::memcpy(static_cast<uint8_t*>(dst) + row * dpitch,
                  static_cast<const uint8_t*>(src) + row * spitch, width);
    }
  });
  return cudaSuccess;
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  return cudaMemsetAsync(dst, value, bytes, nullptr);
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  using namespace kvw_cuda_emulator;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  Stream* s = FindStream(d, stream);
  if (s == nullptr)
    return Misuse(cudaErrorInvalidResourceHandle, "cudaMemset on an unknown stream");
  const Space space = Classify(d, dst, bytes);
  if (space != Space::kDevice) {
    return Misuse(cudaErrorInvalidValue, "cudaMemset of %zu bytes at %p: %s", bytes, dst,
                  SpaceName(space));
  }
  if (bytes > 0) Enqueue(d, s, [dst, value, bytes] { std::memset(dst, value, bytes); });
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  using namespace kvw_cuda_emulator;
  if (stream == nullptr || (flags & ~1u) != 0) return Error(cudaErrorInvalidValue);
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  auto* s = new Stream;
  s->flags = flags;
  d.streams.insert(s);
  *stream = reinterpret_cast<cudaStream_t>(s);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  using namespace kvw_cuda_emulator;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  Stream* s = FindStream(d, stream);
  if (s == nullptr || s == &d.legacy)
    return Misuse(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: unknown stream");
  Drain(d, s);  // CUDA finishes a destroyed stream's work
  d.streams.erase(s);
  for (Event* e : d.events) {
    if (e->stream == s) e->stream = nullptr;
  }
  delete s;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  using namespace kvw_cuda_emulator;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  Stream* s = FindStream(d, stream);
  if (s == nullptr)
    return Misuse(cudaErrorInvalidResourceHandle, "cudaStreamSynchronize: unknown stream");
  Drain(d, s);
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  using namespace kvw_cuda_emulator;
  if (event == nullptr) return Error(cudaErrorInvalidValue);
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  auto* e = new Event;
  d.events.insert(e);
  *event = reinterpret_cast<cudaEvent_t>(e);
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  using namespace kvw_cuda_emulator;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  auto* e = reinterpret_cast<Event*>(event);
  if (d.events.erase(e) == 0)
    return Misuse(cudaErrorInvalidResourceHandle, "cudaEventDestroy: unknown event");
  // A record still queued completes into nothing: drain it first.
  if (e->stream != nullptr && !e->complete) Drain(d, e->stream, e->seq);
  delete e;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  using namespace kvw_cuda_emulator;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  auto* e = reinterpret_cast<Event*>(event);
  Stream* s = FindStream(d, stream);
  if (d.events.count(e) == 0 || s == nullptr) {
    return Misuse(cudaErrorInvalidResourceHandle, "cudaEventRecord: unknown event or stream");
  }
  e->stream = s;
  e->recorded = true;
  e->complete = false;
  Enqueue(d, s, [e] {
    e->complete = true;
    e->at = std::chrono::steady_clock::now();
  });
  e->seq = s->queue.back().seq;
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  using namespace kvw_cuda_emulator;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  auto* e = reinterpret_cast<Event*>(event);
  if (d.events.count(e) == 0)
    return Misuse(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: unknown event");
  if (e->recorded && !e->complete && e->stream != nullptr) Drain(d, e->stream, e->seq);
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  using namespace kvw_cuda_emulator;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  auto *a = reinterpret_cast<Event*>(start), *b = reinterpret_cast<Event*>(end);
  if (ms == nullptr || d.events.count(a) == 0 || d.events.count(b) == 0 || !a->recorded ||
      !b->recorded) {
    return Error(cudaErrorInvalidResourceHandle);
  }
  if (!a->complete || !b->complete) return Error(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}

cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t* handle, void* ptr) {
  using namespace kvw_cuda_emulator;
  if (handle == nullptr) return Error(cudaErrorInvalidValue);
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == d.allocations.end() || it->second.kind != Kind::kDevice) {
    return Misuse(cudaErrorInvalidValue,
                  "cudaIpcGetMemHandle(%p): not the base of a cudaMalloc'd allocation", ptr);
  }
  const Allocation& a = it->second;
  Ipc ipc{kIpcMagic, static_cast<int32_t>(getpid()),
          a.fd,      static_cast<uint64_t>(a.base - a.map),
          a.bytes,   a.file_bytes};
  std::memset(handle, 0, sizeof(*handle));
  std::memcpy(handle->reserved, &ipc, sizeof(ipc));
  return cudaSuccess;
}

cudaError_t cudaIpcOpenMemHandle(void** ptr, cudaIpcMemHandle_t handle, unsigned int flags) {
  using namespace kvw_cuda_emulator;
  if (ptr == nullptr || (flags & ~1u) != 0) return Error(cudaErrorInvalidValue);
  *ptr = nullptr;
  Ipc ipc;
  std::memcpy(&ipc, handle.reserved, sizeof(ipc));
  if (ipc.magic != kIpcMagic || ipc.offset + ipc.bytes > ipc.file_bytes) {
    return Error(cudaErrorInvalidResourceHandle);
  }
  if (ipc.pid == getpid()) {
    return Misuse(cudaErrorInvalidResourceHandle,
                  "cudaIpcOpenMemHandle in the process that made the handle");
  }
  const std::string path = "/proc/" + std::to_string(ipc.pid) + "/fd/" + std::to_string(ipc.fd);
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Error(cudaErrorMapBufferObjectFailed);
  struct stat st {};
  uint8_t* map = nullptr;
  if (fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) == ipc.file_bytes)
    map = MapWithGuard(fd, ipc.file_bytes);
  close(fd);
  if (map == nullptr) return Error(cudaErrorMapBufferObjectFailed);
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  Allocation a{Kind::kImported, map, ipc.file_bytes, map + ipc.offset, ipc.bytes, -1};
  Protect(d, a);
  d.allocations[reinterpret_cast<uintptr_t>(a.base)] = a;
  *ptr = a.base;
  return cudaSuccess;
}

cudaError_t cudaIpcCloseMemHandle(void* ptr) {
  using namespace kvw_cuda_emulator;
  Device& d = Dev();
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == d.allocations.end() || it->second.kind != Kind::kImported) {
    return Misuse(cudaErrorInvalidValue, "cudaIpcCloseMemHandle(%p): not an opened handle", ptr);
  }
  DrainAll(d);
  munmap(it->second.map, it->second.file_bytes + PageBytes());
  d.allocations.erase(it);
  return cudaSuccess;
}
