#include <cstring>

#include "absl/strings/str_cat.h"
#include "cache_service/core/memory/pool_device.h"
#include "kernels/compaction.h"

namespace kvwarden {
namespace {

absl::Status FromKernel(kernels::KernelStatus s, const char* what) {
  if (s == kernels::KernelStatus::kOk) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " kernel failed with status ", static_cast<int>(s)));
}

class CpuDevice final : public PoolDevice {
 public:
  std::string name() const override { return "cpu"; }

  absl::StatusOr<std::unique_ptr<ChunkMemory>> NewChunk(const std::string& name, size_t bytes) override {
    return CreateMemfdChunk(name, bytes);
  }

  absl::Status CopyKv(const kernels::PageGeometry& geometry, const std::vector<uint8_t*>& pages,
                      const std::vector<uint32_t>& begin, const std::vector<uint32_t>& count,
                      kernels::CopyDirection direction, uint8_t* k_host, uint8_t* v_host) override {
    const kernels::PagedLayerView view{geometry, pages.data(), static_cast<uint32_t>(pages.size())};
    return FromKernel(kernels::CopyKvCpu(view, {begin.data(), count.data()}, direction, k_host, v_host), "copy");
  }

  absl::Status Compact(const kernels::PageGeometry& geometry, const std::vector<uint8_t*>& pages,
                       const std::vector<uint32_t>& kept_offsets, const std::vector<uint32_t>& kept_slots) override {
    const kernels::PagedLayerView view{geometry, pages.data(), static_cast<uint32_t>(pages.size())};
    return FromKernel(kernels::CompactLayerCpu(view, kept_offsets.data(), kept_slots.data()), "compaction");
  }

  absl::Status CopyPages(const std::vector<PageCopy>& copies, size_t bytes) override {
    for (const PageCopy& c : copies) std::memcpy(c.dst, c.src, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyToHost(uint8_t* host_dst, const uint8_t* src, size_t bytes) override {
    std::memcpy(host_dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyFromHost(uint8_t* dst, const uint8_t* host_src, size_t bytes) override {
    std::memcpy(dst, host_src, bytes);
    return absl::OkStatus();
  }
};

}  // namespace

std::shared_ptr<PoolDevice> CpuPoolDevice() {
  static const std::shared_ptr<PoolDevice> device = std::make_shared<CpuDevice>();
  return device;
}

}  // namespace kvwarden
