#include "cache_service/ucx_data_plane.h"

#include <pthread.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace kvwarden {

absl::StatusOr<std::unique_ptr<UcxDataPlane>> UcxDataPlane::Start(const Options& options) {
  std::unique_ptr<UcxDataPlane> dp(new UcxDataPlane());
  absl::StatusOr<ucx::Context> context =
      ucx::Context::Create({options.transports, /*wakeup=*/true, /*shared_by_threads=*/true});
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
  registered_.clear();  // unmapped before the context goes
}

absl::StatusOr<ChunkRemoteKey> UcxDataPlane::Key(const PagePool& pool, uint32_t chunk,
                                                 uint64_t generation) {
  if (pool.device() != "cpu") {
    return absl::FailedPreconditionError(absl::StrCat(
        "pool '", pool.name(), "' lives on ", pool.device(),
        ": this daemon's UCX has no memory support for it; use WriteKV/ReadKV"));
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
