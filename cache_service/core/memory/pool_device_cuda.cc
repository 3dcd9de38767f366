// The cuda:N pool device: cudaMalloc'd chunks, CUDA copy and compaction kernels, host
// bytes staged through device buffers. Compiled only when the build has CUDA
// (KVW_HAVE_CUDA); otherwise CudaPoolDevice says the build has none.

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cache_service/core/memory/pool_device.h"
#include "kernels/compaction.h"

#if defined(KVW_HAVE_CUDA)
#include <cuda_runtime.h>

#include "cache_service/core/memory/cuda_queue.h"
#endif

namespace kvwarden {

#if defined(KVW_HAVE_CUDA)
namespace {

// Waits for the legacy default stream. cudaMemset and host-to-device cudaMemcpy from
// pageable memory may return before the device is done, and the policy queue's stream
// is non-blocking, so not ordered after them: a chunk zeroed for its next tenant or an
// uploaded page must be complete before this returns, or a copy queued next could run
// first.
absl::Status FinishDefaultStream(cudaError_t issued, const char* what) {
  if (absl::Status s = CudaError(issued, what); !s.ok()) return s;
  return CudaError(cudaStreamSynchronize(cudaStreamLegacy), what);
}

// Device memory with RAII; not copyable.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  absl::Status Allocate(size_t bytes) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    return CudaError(cudaMalloc(&ptr_, bytes ? bytes : 1), "cudaMalloc");
  }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
};

class CudaChunk final : public ChunkMemory {
 public:
  CudaChunk(int ordinal, uint8_t* data, size_t size) : ordinal_(ordinal), data_(data), size_(size) {}
  ~CudaChunk() override {
    cudaSetDevice(ordinal_);
    cudaFree(data_);
  }
  uint8_t* data() const override { return data_; }
  size_t size() const override { return size_; }
  // Zeroes in place (see ipc_handle on what that leaves a previous owner).
  absl::Status Renew() override {
    cudaSetDevice(ordinal_);
    return FinishDefaultStream(cudaMemset(data_, 0, size_), "cudaMemset");
  }
  // Same-host workers open this with cudaIpcOpenMemHandle. The handle names the whole
  // allocation, which is exactly this chunk (one cudaMalloc per chunk). Renew keeps the
  // allocation, so a handle handed out survives a tenant change (and freeing memory a
  // peer maps is undefined): once shared, the pool keeps the chunk with that tenant
  // (RenewRevokesSharing). Fresh physical backing under a fixed address, revoking old
  // handles, needs the VMM API (cuMemCreate/cuMemMap, fd handles): a follow-up.
  std::string ipc_handle() const override {
    cudaSetDevice(ordinal_);
    cudaIpcMemHandle_t h;
    if (cudaIpcGetMemHandle(&h, data_) != cudaSuccess) return {};
    return std::string(reinterpret_cast<const char*>(&h), sizeof(h));
  }
  bool RenewRevokesSharing() const override { return false; }

 private:
  const int ordinal_;
  uint8_t* const data_;
  const size_t size_;
};

class CudaDevice final : public PoolDevice {
 public:
  CudaDevice(int ordinal, std::shared_ptr<CudaQueue> queue)
      : ordinal_(ordinal),
        queue_(std::move(queue)) {}
  std::string name() const override { return absl::StrCat("cuda:", ordinal_); }
  std::string pci_bus_id() const override {
    char id[32] = {};
    if (cudaDeviceGetPCIBusId(id, sizeof(id), ordinal_) != cudaSuccess) {
      (void)cudaGetLastError();
      return "";
    }
    return id;
  }

  // The most device-only arena space one call takes; beyond it a call allocates its own.
  static constexpr size_t kArenaScratch = size_t{64} << 20;

  absl::StatusOr<std::unique_ptr<ChunkMemory>> NewChunk(const std::string&, size_t bytes) override {
    cudaSetDevice(ordinal_);
    void* p = nullptr;
    if (absl::Status s = CudaError(cudaMalloc(&p, bytes), "cudaMalloc chunk"); !s.ok()) return s;
    if (absl::Status s = FinishDefaultStream(cudaMemset(p, 0, bytes), "cudaMemset chunk");
        !s.ok()) {
      cudaFree(p);
      return s;
    }
    return std::unique_ptr<ChunkMemory>(new CudaChunk(ordinal_, static_cast<uint8_t*>(p), bytes));
  }

  // WriteKV/ReadKV on this pool: page table, ranges and (up to kArenaScratch) the dense
  // K and V go through the policy queue's arena in one staging copy; the kernel and the
  // copies back run on that queue's stream, and only that stream is waited for. A bigger
  // copy allocates its dense buffers for the call instead of keeping the arena that large.
  absl::Status CopyKv(const kernels::PageGeometry& geometry, const std::vector<uint8_t*>& pages,
                      const std::vector<uint32_t>& begin, const std::vector<uint32_t>& count,
                      kernels::CopyDirection direction, uint8_t* k_host, uint8_t* v_host) override {
    // The device kernel cannot refuse a bad range: the CPU kernel's check runs here.
    if (begin.size() != geometry.num_kv_heads || count.size() != geometry.num_kv_heads ||
        k_host == nullptr || v_host == nullptr) {
      return absl::InvalidArgumentError(
          "CopyKv: one slot range per KV head and both dense buffers are required");
    }
    if (!kernels::HeadRangesFit(geometry, static_cast<uint32_t>(pages.size()),
                                {begin.data(), count.data()})) {
      return absl::InvalidArgumentError("CopyKv: a head's slot range runs past the layer's pages");
    }
    uint64_t slots = 0;
    for (uint32_t c : count) slots += c;
    const size_t bytes = slots * geometry.token_bytes();
    if (bytes == 0) return absl::OkStatus();
    const bool to_pages = direction == kernels::CopyDirection::kDenseToPages;
    const bool in_arena = 2 * bytes <= kArenaScratch;
    absl::MutexLock lock(&queue_->mu());
    std::vector<CudaQueue::Part> parts = {{pages.data(), pages.size() * sizeof(uint8_t*)},
                                          {begin.data(), begin.size() * 4},
                                          {count.data(), count.size() * 4}};
    if (in_arena) {
      parts.push_back({to_pages ? k_host : nullptr, bytes});
      parts.push_back({to_pages ? v_host : nullptr, bytes});
    }
    absl::StatusOr<std::vector<void*>> d = queue_->Stage(parts);
    if (!d.ok()) return d.status();
    DeviceBuffer dense;  // only outside the arena
    uint8_t *d_k = nullptr, *d_v = nullptr;
    if (in_arena) {
      d_k = static_cast<uint8_t*>((*d)[3]);
      d_v = static_cast<uint8_t*>((*d)[4]);
    } else {
      const size_t v_at = (bytes + 255) / 256 * 256;  // 16-byte aligned halves for the vector copy
      absl::Status s = dense.Allocate(v_at + bytes);
      d_k = dense.as<uint8_t>();
      d_v = d_k + v_at;
      if (s.ok() && to_pages) {
        s = CudaError(cudaMemcpyAsync(d_k, k_host, bytes, cudaMemcpyHostToDevice, queue_->stream()),
                      "KV upload");
        if (s.ok())
          s = CudaError(
              cudaMemcpyAsync(d_v, v_host, bytes, cudaMemcpyHostToDevice, queue_->stream()),
              "KV upload");
      }
      if (!s.ok()) {
        (void)queue_->Sync();  // what was queued still reads the arena
        return s;
      }
    }
    const kernels::PagedLayerView view{geometry, static_cast<uint8_t* const*>((*d)[0]),
                                       static_cast<uint32_t>(pages.size())};
    if (kernels::CopyKvCuda(
            view, {static_cast<const uint32_t*>((*d)[1]), static_cast<const uint32_t*>((*d)[2])},
            direction, d_k, d_v, queue_->stream(),
            *std::max_element(count.begin(), count.end())) != kernels::KernelStatus::kOk) {
      (void)queue_->Sync();
      return absl::InternalError("CUDA copy kernel refused its arguments");
    }
    if (to_pages) return queue_->Sync();
    if (in_arena) {
      // K and V are neighbours in the arena: one copy back covers both.
      absl::StatusOr<const void*> host = queue_->Fetch(d_k, static_cast<size_t>(d_v - d_k) + bytes);
      if (!host.ok()) return host.status();
      const uint8_t* fetched = static_cast<const uint8_t*>(*host);
      std::memcpy(k_host, fetched, bytes);
      std::memcpy(v_host, fetched + (d_v - d_k), bytes);
      return absl::OkStatus();
    }
    absl::Status s =
        CudaError(cudaMemcpyAsync(k_host, d_k, bytes, cudaMemcpyDeviceToHost, queue_->stream()),
                  "KV download");
    if (s.ok())
      s = CudaError(cudaMemcpyAsync(v_host, d_v, bytes, cudaMemcpyDeviceToHost, queue_->stream()),
                    "KV download");
    const absl::Status synced = queue_->Sync();
    return s.ok() ? synced : s;
  }

  // One staging copy (page table, kept lists) and the gather/scatter kernels on the
  // policy queue's stream, one synchronisation of that stream only. The gather buffer is
  // device-only arena space up to kArenaScratch; a bigger layer (a long sequence's) takes
  // an allocation for the call instead of keeping the arena that large.
  absl::Status Compact(const kernels::PageGeometry& geometry, const std::vector<uint8_t*>& pages,
                       const std::vector<uint32_t>& kept_offsets, const std::vector<uint32_t>& kept_slots) override {
    if (kept_slots.empty()) return absl::OkStatus();
    const size_t scratch_bytes = 2 * kept_slots.size() * geometry.token_bytes();
    const bool in_arena = scratch_bytes <= kArenaScratch;
    absl::MutexLock lock(&queue_->mu());
    absl::StatusOr<std::vector<void*>> d =
        queue_->Stage({{pages.data(), pages.size() * sizeof(uint8_t*)},
                       {kept_offsets.data(), kept_offsets.size() * 4},
                       {kept_slots.data(), kept_slots.size() * 4},
                       {nullptr, in_arena ? scratch_bytes : 0}});
    if (!d.ok()) return d.status();
    DeviceBuffer own_scratch;  // only outside the arena
    void* scratch = (*d)[3];
    if (!in_arena) {
      if (absl::Status s = own_scratch.Allocate(scratch_bytes); !s.ok()) {
        (void)queue_->Sync();
        return s;
      }
      scratch = own_scratch.as<void>();
    }
    const kernels::PagedLayerView view{geometry, static_cast<uint8_t* const*>((*d)[0]),
                                       static_cast<uint32_t>(pages.size())};
    const kernels::KernelStatus k = kernels::CompactLayerCuda(
        view, static_cast<const uint32_t*>((*d)[1]), static_cast<const uint32_t*>((*d)[2]),
        static_cast<uint32_t>(kept_slots.size()), static_cast<uint8_t*>(scratch), queue_->stream());
    const absl::Status synced = queue_->Sync();
    // Refused arguments: nothing ran. A launch or device error: the moves may have run,
    // in part: the caller must not believe nothing moved.
    if (k == kernels::KernelStatus::kInvalidArgument) {
      return absl::InternalError("CUDA compaction kernel refused its arguments");
    }
    if (k != kernels::KernelStatus::kOk || !synced.ok()) {
      return absl::DataLossError(absl::StrCat("CUDA compaction failed after launch: ",
                                              synced.ok() ? "launch error" : synced.message()));
    }
    return absl::OkStatus();
  }

  // Every copy queued on the policy queue's stream, one wait.
  absl::Status CopyPages(const std::vector<PageCopy>& copies, size_t bytes) override {
    if (copies.empty()) return absl::OkStatus();
    absl::MutexLock lock(&queue_->mu());
    queue_->Use();
    absl::Status s;
    for (const PageCopy& c : copies) {
      s = CudaError(
          cudaMemcpyAsync(c.dst, c.src, bytes, cudaMemcpyDeviceToDevice, queue_->stream()),
          "cudaMemcpyAsync page");
      if (!s.ok()) break;
    }
    const absl::Status synced = queue_->Sync();
    return s.ok() ? synced : s;
  }
  // To pageable host memory cudaMemcpy returns only once the copy is done.
  absl::Status CopyToHost(uint8_t* host_dst, const uint8_t* src, size_t bytes) override {
    cudaSetDevice(ordinal_);
    return CudaError(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  }
  absl::Status CopyFromHost(uint8_t* dst, const uint8_t* host_src, size_t bytes) override {
    cudaSetDevice(ordinal_);
    return FinishDefaultStream(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice),
                               "cudaMemcpy H2D");
  }

  std::shared_ptr<CudaQueue> queue() const override { return queue_; }

 private:
  const int ordinal_;
  std::shared_ptr<CudaQueue> queue_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<PoolDevice>> CudaPoolDevice(int ordinal) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    n = 0;  // no driver: no devices
  }
  if (ordinal < 0 || ordinal >= n) {
    return absl::UnavailableError(absl::StrCat("cuda:", ordinal, " is not visible (", n, " CUDA devices)"));
  }
  absl::StatusOr<std::shared_ptr<CudaQueue>> queue = CudaQueue::Create(ordinal);
  if (!queue.ok()) return queue.status();
  return std::shared_ptr<PoolDevice>(std::make_shared<CudaDevice>(ordinal, *std::move(queue)));
}

#else

absl::StatusOr<std::shared_ptr<PoolDevice>> CudaPoolDevice(int ordinal) {
  return absl::UnavailableError(absl::StrCat("cuda:", ordinal, ": this build has no CUDA support"));
}

#endif

}  // namespace kvwarden
