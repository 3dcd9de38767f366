#include "cache_service/dataplane/ucx_data_plane.h"

#include <pthread.h>
#include <sys/statvfs.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvwarden {
namespace {

// The fd UCX keeps open for the shared-memory file mapped at `address` (it hands peers
// /proc/<pid>/fd links to it), found through /proc/self/maps; -1 if there is none.
int FindMappingFd(const void* address) {
  std::ifstream maps("/proc/self/maps");
  const std::string start = absl::StrFormat("%x-", reinterpret_cast<uintptr_t>(address));
  std::string line, path;
  while (std::getline(maps, line)) {
    if (line.rfind(start, 0) != 0) continue;
    // "address perms offset dev inode path": the path is the rest after five fields
    // (it may hold spaces, e.g. " (deleted)").
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%*s %*s %*s %*s %*s %n", &path_at) < 0 || path_at == 0) return -1;
    path = line.substr(path_at);
    break;
  }
  if (path.empty()) return -1;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    std::error_code link_ec;
    const std::string target = std::filesystem::read_symlink(entry.path(), link_ec).string();
    if (!link_ec && target == path) return std::atoi(entry.path().filename().c_str());
  }
  return -1;
}

// A chunk in memory UCX allocated; renewed by allocating afresh (the old file stays
// with whoever still maps it, i.e. only the previous owner's workers).
class UcxChunk final : public ChunkMemory {
 public:
  static absl::StatusOr<std::unique_ptr<UcxChunk>> Create(const ucx::Context* context,
                                                          size_t bytes) {
    auto chunk = std::unique_ptr<UcxChunk>(new UcxChunk(context, bytes));
    if (absl::Status s = chunk->Renew(); !s.ok()) return s;
    return chunk;
  }
  uint8_t* data() const override { return static_cast<uint8_t*>(region_.data()); }
  size_t size() const override { return bytes_; }
  int fd() const override { return fd_; }
  const std::string* packed_rkey() const override { return &region_.packed_rkey(); }
  absl::Status Renew() override {
    absl::StatusOr<ucx::MemoryRegion> fresh = ucx::MemoryRegion::Allocate(*context_, bytes_);
    if (!fresh.ok()) return fresh.status();
    const int fd = FindMappingFd(fresh->data());
    if (fd < 0) {
      return absl::FailedPreconditionError(
          "UCX allocated the chunk without a file to share (set UCX_POSIX_USE_PROC_LINK=y)");
    }
    region_ = *std::move(fresh);
    fd_ = fd;
    return absl::OkStatus();
  }

 private:
  UcxChunk(const ucx::Context* context, size_t bytes) : context_(context), bytes_(bytes) {}
  const ucx::Context* const context_;
  const size_t bytes_;
  ucx::MemoryRegion region_;
  int fd_ = -1;  // UCX's, not ours
};

}  // namespace

absl::StatusOr<std::unique_ptr<ChunkMemory>> UcxDataPlane::NewChunk(size_t bytes) {
  if (shm_promised_.fetch_add(bytes) + bytes > shm_free_at_start_) {
    shm_promised_.fetch_sub(bytes);
    return absl::ResourceExhaustedError(
        absl::StrFormat("/dev/shm had %d bytes free at start; the pools' chunks would need more",
                        shm_free_at_start_));
  }
  absl::StatusOr<std::unique_ptr<UcxChunk>> chunk = UcxChunk::Create(&context_, bytes);
  if (!chunk.ok()) return chunk.status();
  return std::unique_ptr<ChunkMemory>(*std::move(chunk));
}

absl::StatusOr<std::unique_ptr<UcxDataPlane>> UcxDataPlane::Start(const Options& options) {
  absl::StatusOr<std::string> transports = ucx::BoundedTransports(options.transports);
  if (!transports.ok()) return transports.status();
  std::unique_ptr<UcxDataPlane> dp(new UcxDataPlane());
  dp->stage_all_ = options.stage_all_pools;
  const char* dir = std::getenv("UCX_POSIX_DIR");
  struct statvfs fs;
  if (statvfs(dir != nullptr ? dir : "/dev/shm", &fs) == 0) {
    // Leave a quarter for staging buffers and everyone else.
    dp->shm_free_at_start_ = uint64_t{fs.f_bavail} * fs.f_frsize / 4 * 3;
  }
  // Chunks come from the POSIX domain: it keeps a file per allocation, which attach needs.
  absl::StatusOr<ucx::Context> context = ucx::Context::Create(
      {*transports, "md:posix", options.net_devices, /*wakeup=*/true,
       /*shared_by_threads=*/true, /*rma=*/false, /*posix_proc_link=*/true});
  if (!context.ok()) return context.status();
  dp->context_ = *std::move(context);
  absl::StatusOr<ucx::Worker> worker = ucx::Worker::Create(dp->context_);
  if (!worker.ok()) return worker.status();
  dp->worker_ = *std::move(worker);
  absl::StatusOr<std::string> address = dp->worker_.Address();
  if (!address.ok()) return address.status();
  dp->address_ = *std::move(address);
  UcxDataPlane* raw = dp.get();
  dp->progress_ = std::thread([raw] {
    pthread_setname_np(pthread_self(), "kvw-ucx");
    while (!raw->stop_.load(std::memory_order_relaxed)) {
      raw->worker_.ProgressOrWait(absl::Milliseconds(100));
    }
  });
  return dp;
}

UcxDataPlane::~UcxDataPlane() {
  stop_.store(true);
  worker_.Signal();
  if (progress_.joinable()) progress_.join();
  absl::MutexLock lock(&mu_);
  staged_.clear();
  registered_.clear();  // unmapped before the context goes
}

absl::StatusOr<ChunkRemoteKey> UcxDataPlane::Stage(TenantId tenant, TransferMode mode,
                                                   const TransferGrant& grant) {
  PagePool& pool = *grant.pool;
  const size_t page = pool.page_bytes();
  const size_t bytes = grant.layers.size() * grant.num_pages * page;
  absl::StatusOr<ucx::MemoryRegion> buffer = ucx::MemoryRegion::Allocate(context_, bytes);
  if (!buffer.ok()) return buffer.status();
  Staged staged{tenant, mode, &pool, {}, *std::move(buffer)};
  // Pages in (for writes too: a write may cover only some of the granted pages).
  auto* out = static_cast<uint8_t*>(staged.buffer.data());
  for (const std::vector<PageRun>& runs : grant.layers) {
    for (const PageRun& r : runs) {
      uint8_t* device = pool.ChunkData(r.chunk) + r.offset;
      const size_t n = size_t{r.pages} * page;
      if (absl::Status s = pool.device_ops().CopyToHost(out, device, n); !s.ok()) return s;
      staged.runs.emplace_back(device, n);
      out += n;
    }
  }
  ChunkRemoteKey key{kStagingChunkBit | static_cast<uint32_t>(grant.id & ~kStagingChunkBit), 1,
                     staged.buffer.address(), bytes, staged.buffer.packed_rkey()};
  absl::MutexLock lock(&mu_);
  staged_.insert_or_assign(grant.id, std::move(staged));
  return key;
}

absl::Status UcxDataPlane::Unstage(TransferId id, bool copy_back) {
  Staged staged;
  {
    absl::MutexLock lock(&mu_);
    auto it = staged_.find(id);
    if (it == staged_.end()) return absl::OkStatus();
    staged = std::move(it->second);
    staged_.erase(it);
  }
  if (!copy_back || staged.mode != TransferMode::kWrite) return absl::OkStatus();
  auto* in = static_cast<const uint8_t*>(staged.buffer.data());
  for (const auto& [device, n] : staged.runs) {
    if (absl::Status s = staged.pool->device_ops().CopyFromHost(device, in, n); !s.ok()) return s;
    in += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<ChunkRemoteKey> UcxDataPlane::Key(const PagePool& pool, uint32_t chunk,
                                                 uint64_t generation) {
  if (pool.device() != "cpu") {
    return absl::FailedPreconditionError(
        absl::StrCat("pool '", pool.name(), "' lives on ", pool.device(),
                     ": this daemon's UCX has no memory support for it; use WriteKV/ReadKV"));
  }
  if (const std::string* own = pool.ChunkRkey(chunk); own != nullptr) {
    return ChunkRemoteKey{chunk, generation, reinterpret_cast<uint64_t>(pool.ChunkData(chunk)),
                          pool.chunk_bytes(), *own};
  }
  absl::MutexLock lock(&mu_);
  Registration& reg = registered_[{&pool, chunk}];
  if (reg.generation != generation || reg.region.packed_rkey().empty()) {
    reg.region = ucx::MemoryRegion();  // unmap the old registration first
    absl::StatusOr<ucx::MemoryRegion> region =
        ucx::MemoryRegion::Register(context_, pool.ChunkData(chunk), pool.chunk_bytes());
    if (!region.ok()) {
      registered_.erase({&pool, chunk});
      return region.status();
    }
    reg.region = *std::move(region);
    reg.generation = generation;
  }
  return ChunkRemoteKey{chunk, generation, reg.region.address(), reg.region.length(),
                        reg.region.packed_rkey()};
}

}  // namespace kvwarden
