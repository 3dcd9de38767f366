// Definitions of every CUDA entry point for builds without nvcc: each exists and says so
// (kNotCompiled). The daemon only calls them for cuda pools, which such builds refuse.
#include "kernels/compaction.h"
#include "kernels/copy_kv.h"
#include "kernels/h2o.h"
#include "kernels/scissorhands.h"
#include "kernels/streaming.h"
#include "kernels/windowkv.h"

namespace kvwarden::kernels {

KernelStatus CopyKvCuda(const PagedLayerView&, HeadSlotRanges, CopyDirection, uint8_t*, uint8_t*,
                        void*, uint32_t) {
  return KernelStatus::kNotCompiled;
}
KernelStatus StreamingSelectCuda(Segments, StreamingParams, uint8_t*, void*) {
  return KernelStatus::kNotCompiled;
}
KernelStatus ScissorhandsRecordBatchCuda(const ScissorhandsRecordHead*, const uint32_t*, uint32_t,
                                         const uint32_t*, void*) {
  return KernelStatus::kNotCompiled;
}
KernelStatus ScissorhandsSelectCuda(Segments, ScissorhandsHistory, ScissorhandsParams, uint8_t*,
                                    uint32_t*, void*) {
  return KernelStatus::kNotCompiled;
}
KernelStatus ScissorhandsCompactHeadCuda(ScissorhandsHistory, uint32_t, const uint32_t*, uint32_t, uint32_t,
                                         uint32_t*, void*) {
  return KernelStatus::kNotCompiled;
}
KernelStatus WindowKvScoreCuda(const float*, uint32_t, uint32_t, WindowKvParams, double*, void*) {
  return KernelStatus::kNotCompiled;
}
KernelStatus WindowKvSelectCuda(const double*, uint32_t, WindowKvParams, uint8_t*, void*) {
  return KernelStatus::kNotCompiled;
}
KernelStatus CompactLayerCuda(const PagedLayerView&, const uint32_t*, const uint32_t*, uint32_t,
                              uint8_t*, void*) {
  return KernelStatus::kNotCompiled;
}

KernelStatus H2oAccumulateCuda(H2oScores, uint32_t, uint32_t, const uint32_t*, const float*, void*) {
  return KernelStatus::kNotCompiled;
}
KernelStatus H2oSelectCuda(Segments, H2oScores, H2oParams, uint8_t*, void*) { return KernelStatus::kNotCompiled; }
KernelStatus H2oCompactHeadCuda(H2oScores, uint32_t, const uint32_t*, uint32_t, uint32_t, float*, void*) {
  return KernelStatus::kNotCompiled;
}

bool CudaDeviceAvailable() { return false; }

}  // namespace kvwarden::kernels
