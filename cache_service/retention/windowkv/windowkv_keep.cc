#include "cache_service/retention/windowkv/windowkv_keep.h"

#include "absl/strings/str_cat.h"

#if defined(KVW_HAVE_CUDA)
#include "cache_service/core/memory/cuda_queue.h"
#endif

namespace kvwarden {
namespace {

absl::Status FromKernel(kernels::KernelStatus s, const char* what) {
  if (s == kernels::KernelStatus::kOk) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " kernel failed with status ", static_cast<int>(s)));
}

absl::Status KeepOnCpu(const std::vector<float>& sums, uint32_t heads, uint32_t n, const kernels::WindowKvParams& p,
                       std::vector<uint8_t>* keep) {
  std::vector<double> scores(kernels::WindowKvNumWindows(n - p.alpha, p.omega));
  keep->assign(n, 0);
  if (absl::Status s = FromKernel(kernels::WindowKvScoreCpu(sums.data(), heads, n, p, scores.data()), "windowkv score");
      !s.ok()) {
    return s;
  }
  return FromKernel(kernels::WindowKvSelectCpu(scores.data(), n, p, keep->data()), "windowkv select");
}

#if defined(KVW_HAVE_CUDA)
absl::Status KeepOnDevice(CudaQueue& queue, const std::vector<float>& sums, uint32_t heads, uint32_t n,
                          const kernels::WindowKvParams& p, std::vector<uint8_t>* keep) {
  const uint32_t windows = kernels::WindowKvNumWindows(n - p.alpha, p.omega);
  absl::MutexLock lock(&queue.mu());
  absl::StatusOr<std::vector<void*>> d =
      queue.Stage({{sums.data(), sums.size() * 4}, {nullptr, size_t{windows} * 8}, {nullptr, n}});
  if (!d.ok()) return d.status();
  if (kernels::WindowKvScoreCuda(static_cast<const float*>((*d)[0]), heads, n, p, static_cast<double*>((*d)[1]),
                                 queue.stream()) != kernels::KernelStatus::kOk ||
      kernels::WindowKvSelectCuda(static_cast<const double*>((*d)[1]), n, p, static_cast<uint8_t*>((*d)[2]),
                                  queue.stream()) != kernels::KernelStatus::kOk) {
    (void)queue.Sync();  // what was queued still reads the arena
    return absl::InternalError("windowkv CUDA kernels failed");
  }
  absl::StatusOr<const void*> host = queue.Fetch((*d)[2], n);
  if (!host.ok()) return host.status();
  const uint8_t* mask = static_cast<const uint8_t*>(*host);
  keep->assign(mask, mask + n);
  return absl::OkStatus();
}
#endif

}  // namespace

absl::Status WindowKvKeep(PoolDevice& device, const std::vector<float>& sums, uint32_t heads, uint32_t n,
                          const kernels::WindowKvParams& p, std::vector<uint8_t>* keep) {
#if defined(KVW_HAVE_CUDA)
  if (std::shared_ptr<CudaQueue> queue = device.queue(); queue != nullptr) {
    return KeepOnDevice(*queue, sums, heads, n, p, keep);
  }
#else
  (void)device;  // a build without CUDA has only host pools
#endif
  return KeepOnCpu(sums, heads, n, p, keep);
}

}  // namespace kvwarden
