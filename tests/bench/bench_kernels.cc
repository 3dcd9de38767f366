// bench_kernels: retention kernels next to a memcpy of the same input bytes, same run.
// Shapes from the issue: 32 layers x 8 heads x 4096 slots for Scissorhands (w = 400),
// WindowKV selection over a 32k-token prompt (8 heads, gamma 8 -> 4 leader layers),
// compaction of a 32 x 8 x 4096-slot fp16 (head_dim 128) sequence keeping half.
// On a CUDA device (device machine), the same kernels run against cudaMemcpy D2D.

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/compaction.h"
#include "kernels/copy_kv.h"
#include "kernels/scissorhands.h"
#include "kernels/windowkv.h"

#if defined(KVW_HAVE_CUDA)
#include <cuda_runtime.h>
#endif

namespace kvwarden::kernels {
namespace {

constexpr uint32_t kLayers = 32, kHeads = 8, kSlots = 4096, kWindow = 400;
constexpr uint32_t kPrompt = 32768, kHeadDim = 128;

std::map<std::string, double> g_bps;  // benchmark -> bytes/s, for the ratio summary

void Report(benchmark::State& state, const std::string& name, double bytes_per_iter) {
  state.SetBytesProcessed(static_cast<int64_t>(bytes_per_iter * state.iterations()));
  g_bps[name] = 0;  // filled by the reporter from the library's rate
}

struct ScissorhandsInput {
  std::vector<uint32_t> offsets, history, attended, listed_offsets, listed;
  ScissorhandsInput() {
    std::mt19937 rng(1);
    const uint32_t heads = kLayers * kHeads, words = ScissorhandsWords(kWindow);
    for (uint32_t h = 0; h <= heads; ++h) offsets.push_back(h * kSlots);
    history.resize(size_t{heads} * kSlots * words);
    for (auto& w : history) w = rng();
    attended.assign(heads, kSlots);
    listed_offsets.push_back(0);
    for (uint32_t h = 0; h < heads; ++h) {
      for (uint32_t j = 0; j < kSlots; ++j) {
        if (rng() % 20 == 0) listed.push_back(j);  // ~5% at or above threshold
      }
      listed_offsets.push_back(listed.size());
    }
    for (uint32_t h = 0; h < heads; ++h) {
      listed_ids.push_back(
          {listed.data() + listed_offsets[h], listed_offsets[h + 1] - listed_offsets[h]});
    }
  }
  size_t history_bytes() const { return history.size() * 4; }
  std::vector<ListedIds> listed_ids;  // each head's ids, as the daemon passes them
};

ScissorhandsInput& Input() {
  static ScissorhandsInput* in = new ScissorhandsInput();
  return *in;
}

// One decode step's update alone (what stats ingest pays per step, through the daemon's
// ScissorhandsRecordStepsCpu), against a copy of the plane it writes (4 bytes per slot per head).
void BM_ScissorhandsRecordStep_Cpu(benchmark::State& state) {
  ScissorhandsInput& in = Input();
  const Segments seg{kLayers * kHeads, in.offsets.data()};
  const ScissorhandsHistory hist{in.history.data(), kWindow, kSlots};
  uint64_t step = 0;
  for (auto _ : state) {
    ScissorhandsRecordStepsCpu(seg, hist, step++, 1, in.attended.data(), in.listed_ids.data());
    benchmark::ClobberMemory();
  }
  Report(state, "record_cpu", 4.0 * kLayers * kHeads * kSlots);
  state.counters["ids_per_s"] = benchmark::Counter(static_cast<double>(in.listed.size()) * state.iterations(),
                                                   benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ScissorhandsRecordStep_Cpu)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_ScissorhandsUpdateSelect_Cpu(benchmark::State& state) {
  ScissorhandsInput& in = Input();
  const Segments seg{kLayers * kHeads, in.offsets.data()};
  std::vector<uint8_t> keep(seg.total());
  ScissorhandsParams p{kSlots - 1, kWindow, 10, 0, 0};  // every head one over budget: selects
  uint64_t step = 0;
  for (auto _ : state) {
    const ScissorhandsHistory hist{in.history.data(), kWindow, kSlots};
    ScissorhandsRecordStepsCpu(seg, hist, step++, 1, in.attended.data(), in.listed_ids.data());
    ScissorhandsSelectCpu(seg, hist, p, keep.data(), nullptr);
    benchmark::DoNotOptimize(keep.data());
  }
  Report(state, "scissorhands_cpu", 2.0 * in.history_bytes());
}
BENCHMARK(BM_ScissorhandsUpdateSelect_Cpu)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_MemcpyScissorhandsBytes(benchmark::State& state) {
  ScissorhandsInput& in = Input();
  std::vector<uint32_t> dst(in.history.size());
  for (auto _ : state) {
    // The kernel pair reads the history twice (update, select): copy it twice.
    std::memcpy(dst.data(), in.history.data(), in.history_bytes());
    std::memcpy(in.history.data(), dst.data(), in.history_bytes());
    benchmark::ClobberMemory();
  }
  Report(state, "memcpy_scissorhands", 2.0 * in.history_bytes());
}
BENCHMARK(BM_MemcpyScissorhandsBytes)->Unit(benchmark::kMillisecond)->UseRealTime();

struct WindowInput {
  std::vector<float> t;  // 4 leader layers x 8 heads x candidates
  WindowInput() : t(size_t{4} * kHeads * (kPrompt - 8)) {
    std::mt19937 rng(2);
    for (float& x : t) x = std::uniform_real_distribution<float>(0, 1)(rng);
  }
};

void BM_WindowKvScoreSelect_Cpu(benchmark::State& state) {
  static WindowInput in;
  const uint32_t cand = kPrompt - 8;
  WindowKvParams p{8, 8, 8, 4096};
  std::vector<double> scores(WindowKvNumWindows(cand, 8));
  std::vector<uint8_t> keep(kPrompt);
  for (auto _ : state) {
    for (uint32_t g = 0; g < 4; ++g) {
      WindowKvScoreCpu(in.t.data() + size_t{g} * kHeads * cand, kHeads, kPrompt, p, scores.data());
      WindowKvSelectCpu(scores.data(), kPrompt, p, keep.data());
    }
    benchmark::DoNotOptimize(keep.data());
  }
  Report(state, "windowkv_cpu", in.t.size() * 4.0);
}
BENCHMARK(BM_WindowKvScoreSelect_Cpu)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_MemcpyWindowKvBytes(benchmark::State& state) {
  static WindowInput in;
  std::vector<float> dst(in.t.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), in.t.data(), in.t.size() * 4);
    benchmark::ClobberMemory();
  }
  Report(state, "memcpy_windowkv", in.t.size() * 4.0);
}
BENCHMARK(BM_MemcpyWindowKvBytes)->Unit(benchmark::kMillisecond)->UseRealTime();

// One layer (8 heads x 4096 slots x 128 fp16, 16-token pages), keeping half the slots:
// every other slot (one-slot runs: the worst case and the goal's row), a random half
// (Scissorhands-like eviction) or alternate 8-token windows (WindowKV-like). The same
// bytes move in each, so one memcpy reference serves all three.
enum class KeepPattern { kEveryOther, kRandomHalf, kWindowsOf8 };

// Page-aligned bytes, as pool chunks are (mmap'd), so the figures do not depend on where
// malloc puts a large buffer (16 bytes past a page: every 256-byte row then spans five
// cache lines; measured no different here, 0.54-0.56x either way).
struct AlignedBytes {
  explicit AlignedBytes(size_t n)
      : size_(n), data_(static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096))) {
    std::memset(data_.get(), 1, n);
  }
  uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  size_t size_;
  std::unique_ptr<uint8_t, Free> data_;
};

struct LayerInput {
  PageGeometry g{kHeads, kHeadDim, 16, 2};
  AlignedBytes arena;
  std::vector<uint8_t*> pages;
  std::vector<uint32_t> offsets{0}, kept;
  explicit LayerInput(KeepPattern pattern) : arena(g.page_bytes() * (kSlots / 16)) {
    for (uint32_t i = 0; i < kSlots / 16; ++i) pages.push_back(arena.data() + i * g.page_bytes());
    std::mt19937 rng(3);
    for (uint32_t h = 0; h < kHeads; ++h) {
      std::vector<uint32_t> slots(kSlots);
      for (uint32_t j = 0; j < kSlots; ++j) slots[j] = j;
      if (pattern == KeepPattern::kRandomHalf) {
        std::shuffle(slots.begin(), slots.end(), rng);
        slots.resize(kSlots / 2);
        std::sort(slots.begin(), slots.end());
      } else {
        const uint32_t run = pattern == KeepPattern::kEveryOther ? 1 : 8;
        slots.erase(std::remove_if(slots.begin(), slots.end(), [&](uint32_t j) { return (j / run) % 2 == 1; }),
                    slots.end());
      }
      kept.insert(kept.end(), slots.begin(), slots.end());
      offsets.push_back(kept.size());
    }
  }
  double moved_bytes() const { return 2.0 * kept.size() * g.token_bytes(); }  // K and V
};

LayerInput& Layer(KeepPattern pattern) {
  static LayerInput* inputs[3] = {new LayerInput(KeepPattern::kEveryOther), new LayerInput(KeepPattern::kRandomHalf),
                                  new LayerInput(KeepPattern::kWindowsOf8)};
  return *inputs[static_cast<int>(pattern)];
}

void CompactLayerBench(benchmark::State& state, KeepPattern pattern, const char* name) {
  LayerInput& in = Layer(pattern);
  PagedLayerView view{in.g, in.pages.data(), static_cast<uint32_t>(in.pages.size())};
  for (auto _ : state) {
    CompactLayerCpu(view, in.offsets.data(), in.kept.data());
    benchmark::ClobberMemory();
  }
  Report(state, name, in.moved_bytes());
}
void BM_CompactLayer_Cpu(benchmark::State& state) { CompactLayerBench(state, KeepPattern::kEveryOther, "compaction_cpu"); }
BENCHMARK(BM_CompactLayer_Cpu)->UseRealTime();
void BM_CompactLayerRandomHalf_Cpu(benchmark::State& state) {
  CompactLayerBench(state, KeepPattern::kRandomHalf, "compaction_random_cpu");
}
BENCHMARK(BM_CompactLayerRandomHalf_Cpu)->UseRealTime();
void BM_CompactLayerWindows_Cpu(benchmark::State& state) {
  CompactLayerBench(state, KeepPattern::kWindowsOf8, "compaction_windows_cpu");
}
BENCHMARK(BM_CompactLayerWindows_Cpu)->UseRealTime();

void BM_MemcpyCompactionBytes(benchmark::State& state) {
  LayerInput& in = Layer(KeepPattern::kEveryOther);
  AlignedBytes dst(static_cast<size_t>(in.moved_bytes()));
  for (auto _ : state) {
    std::memcpy(dst.data(), in.arena.data(), dst.size());
    benchmark::ClobberMemory();
  }
  Report(state, "memcpy_compaction", in.moved_bytes());
}
BENCHMARK(BM_MemcpyCompactionBytes)->UseRealTime();

// The access pattern's own cost, as a second reference: every other row of the same
// arena copied down in place with a plain loop (no page table, no kept list). What the
// one-slot-run compaction could reach if its page table and kept list cost nothing. On
// the 2-core EPYC VM this loop makes 0.60-0.61x of memcpy, the kernel 0.50-0.57x.
constexpr size_t kRowBytes = kHeadDim * 2;  // fp16, a compile-time size like the kernel's
#if defined(__x86_64__)
// 32-byte moves, as the kernel's AVX2 instance makes (baseline SSE moves measured ~0.6x).
__attribute__((target("avx2")))
#endif
void CopyEveryOtherRowDown(uint8_t* base, size_t rows) {
  for (size_t k = 1; k < rows; ++k)
    std::memcpy(base + k * kRowBytes, base + 2 * k * kRowBytes, kRowBytes);
}
void BM_StridedRowsInPlace(benchmark::State& state) {
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2"))
    return state.SkipWithError("needs AVX2 (the kernel's fast instance)");
#endif
  LayerInput& in = Layer(KeepPattern::kEveryOther);
  for (auto _ : state) {
    CopyEveryOtherRowDown(in.arena.data(), static_cast<size_t>(in.moved_bytes()) / kRowBytes);
    benchmark::ClobberMemory();
  }
  Report(state, "strided_rows", in.moved_bytes());
}
BENCHMARK(BM_StridedRowsInPlace)->UseRealTime();

#if defined(KVW_HAVE_CUDA)
// GPU: kernels and cudaMemcpy D2D of the same bytes, timed with events.
template <typename Fn>
void TimeCuda(benchmark::State& state, Fn&& fn) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (auto _ : state) {
    cudaEventRecord(a);
    fn();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    state.SetIterationTime(ms / 1e3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
}

void BM_ScissorhandsUpdateSelect_Cuda(benchmark::State& state) {
  if (!CudaDeviceAvailable()) return state.SkipWithError("no CUDA device");
  ScissorhandsInput& in = Input();
  uint32_t *off, *hist, *ids, *low, *groups;
  uint8_t* keep;
  ScissorhandsRecordHead* heads;
  const uint32_t num_heads = kLayers * kHeads;
  cudaMalloc(&off, in.offsets.size() * 4);
  cudaMalloc(&hist, in.history_bytes());
  cudaMalloc(&ids, in.listed.size() * 4);
  cudaMalloc(&low, in.offsets.back() * 4);
  cudaMalloc(&keep, in.offsets.back());
  cudaMemcpy(off, in.offsets.data(), in.offsets.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(hist, in.history.data(), in.history_bytes(), cudaMemcpyHostToDevice);
  // The record kernel's batch for every ring position, built before timing (the daemon
  // builds a message's on the host and stages it with the ids).
  const ScissorhandsHistory h{hist, kWindow, kSlots};
  std::vector<ListedIds> listed;
  for (uint32_t lh = 0; lh < num_heads; ++lh) {
    listed.push_back({in.listed.data() + in.listed_offsets[lh],
                      in.listed_offsets[lh + 1] - in.listed_offsets[lh]});
  }
  ScissorhandsRecordBatch batch;
  AppendScissorhandsRecordSteps({num_heads, in.offsets.data()}, h, 0, 1, in.attended.data(),
                                listed.data(), &batch);
  std::vector<ScissorhandsRecordHead> all_heads;
  for (uint32_t step = 0; step < kWindow; ++step) {
    for (ScissorhandsRecordHead d : batch.heads) {
      const uint32_t bit = step % kWindow;
      d.plane = d.plane + (bit / 32) * kSlots;  // word 0's plane -> this step's word plane
      d.mask = 1u << (bit % 32);
      all_heads.push_back(d);
    }
  }
  cudaMalloc(&heads, all_heads.size() * sizeof(ScissorhandsRecordHead));
  cudaMemcpy(heads, all_heads.data(), all_heads.size() * sizeof(ScissorhandsRecordHead),
             cudaMemcpyHostToDevice);
  cudaMalloc(&groups, num_heads * 4);
  cudaMemcpy(groups, batch.group_ends.data(), num_heads * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(ids, batch.ids.data(), batch.ids.size() * 4, cudaMemcpyHostToDevice);
  const Segments seg{num_heads, off};
  ScissorhandsParams p{kSlots - 1, kWindow, 10, 0, 0};
  uint64_t step = 0;
  TimeCuda(state, [&] {
    ScissorhandsRecordBatchCuda(heads + (step++ % kWindow) * num_heads, groups, num_heads, ids,
                                nullptr);
    ScissorhandsSelectCuda(seg, h, p, keep, low, nullptr);
  });
  Report(state, "scissorhands_cuda", 2.0 * in.history_bytes());
  for (void* ptr : {static_cast<void*>(off), static_cast<void*>(hist), static_cast<void*>(ids),
                    static_cast<void*>(low), static_cast<void*>(keep), static_cast<void*>(heads),
                    static_cast<void*>(groups)}) {
    cudaFree(ptr);
  }
}
BENCHMARK(BM_ScissorhandsUpdateSelect_Cuda)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_D2DCopy(benchmark::State& state) {
  if (!CudaDeviceAvailable()) return state.SkipWithError("no CUDA device");
  const size_t bytes = static_cast<size_t>(state.range(0));
  void *a, *b;
  cudaMalloc(&a, bytes);
  cudaMalloc(&b, bytes);
  TimeCuda(state, [&] { cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice); });
  Report(state, "d2d_" + std::to_string(bytes), static_cast<double>(bytes));
  cudaFree(a);
  cudaFree(b);
}
BENCHMARK(BM_D2DCopy)->Arg(2 * 32 * 8 * 4096 * 52)->Arg(2 * 8 * 2048 * 256)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_CompactLayer_Cuda(benchmark::State& state) {
  if (!CudaDeviceAvailable()) return state.SkipWithError("no CUDA device");
  LayerInput& in = Layer(KeepPattern::kEveryOther);
  uint8_t *arena, *scratch;
  uint8_t** pages;
  uint32_t *off, *kept;
  cudaMalloc(&arena, in.arena.size());
  cudaMalloc(&scratch, static_cast<size_t>(in.moved_bytes()));
  std::vector<uint8_t*> dev_pages;
  for (size_t i = 0; i < in.pages.size(); ++i) dev_pages.push_back(arena + i * in.g.page_bytes());
  cudaMalloc(&pages, dev_pages.size() * sizeof(uint8_t*));
  cudaMemcpy(pages, dev_pages.data(), dev_pages.size() * sizeof(uint8_t*), cudaMemcpyHostToDevice);
  cudaMalloc(&off, in.offsets.size() * 4);
  cudaMalloc(&kept, in.kept.size() * 4);
  cudaMemcpy(off, in.offsets.data(), in.offsets.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(kept, in.kept.data(), in.kept.size() * 4, cudaMemcpyHostToDevice);
  PagedLayerView view{in.g, pages, static_cast<uint32_t>(dev_pages.size())};
  TimeCuda(state, [&] {
    CompactLayerCuda(view, off, kept, static_cast<uint32_t>(in.kept.size()), scratch, nullptr);
  });
  Report(state, "compaction_cuda", in.moved_bytes());
  cudaFree(arena);
  cudaFree(scratch);
  cudaFree(pages);
  cudaFree(off);
  cudaFree(kept);
}
BENCHMARK(BM_CompactLayer_Cuda)->UseManualTime()->Unit(benchmark::kMicrosecond);

// WindowKV on a 32k prompt, scores already on the device (the daemon stages them once).
void BM_WindowKvScoreSelect_Cuda(benchmark::State& state) {
  if (!CudaDeviceAvailable()) return state.SkipWithError("no CUDA device");
  static WindowInput in;
  const uint32_t cand = kPrompt - 8;
  WindowKvParams p{8, 8, 8, 4096};
  float* t;
  double* scores;
  uint8_t* keep;
  cudaMalloc(&t, in.t.size() * 4);
  cudaMalloc(&scores, WindowKvNumWindows(cand, 8) * sizeof(double));
  cudaMalloc(&keep, kPrompt);
  cudaMemcpy(t, in.t.data(), in.t.size() * 4, cudaMemcpyHostToDevice);
  TimeCuda(state, [&] {
    for (uint32_t g = 0; g < 4; ++g) {
      WindowKvScoreCuda(t + size_t{g} * kHeads * cand, kHeads, kPrompt, p, scores, nullptr);
      WindowKvSelectCuda(scores, kPrompt, p, keep, nullptr);
    }
  });
  Report(state, "windowkv_cuda", in.t.size() * 4.0);
  cudaFree(t);
  cudaFree(scores);
  cudaFree(keep);
}
BENCHMARK(BM_WindowKvScoreSelect_Cuda)->UseManualTime()->Unit(benchmark::kMicrosecond);
#endif

class Reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      const std::string n = r.benchmark_name();
      const double seconds = r.real_accumulated_time / r.iterations;
      auto it = r.counters.find("bytes_per_second");
      const double bps = it != r.counters.end() ? it->second.value : 0;
      (void)seconds;
      for (auto& [key, value] : g_bps) {
        if (Matches(n, key)) value = bps;
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }

 private:
  static bool Matches(const std::string& bench, const std::string& key) {
    static const std::map<std::string, std::string> kNames = {
        {"scissorhands_cpu", "BM_ScissorhandsUpdateSelect_Cpu"},
        {"record_cpu", "BM_ScissorhandsRecordStep_Cpu"},
        {"memcpy_scissorhands", "BM_MemcpyScissorhandsBytes"},
        {"windowkv_cpu", "BM_WindowKvScoreSelect_Cpu"},
        {"memcpy_windowkv", "BM_MemcpyWindowKvBytes"},
        {"compaction_cpu", "BM_CompactLayer_Cpu"},
        {"compaction_random_cpu", "BM_CompactLayerRandomHalf_Cpu"},
        {"compaction_windows_cpu", "BM_CompactLayerWindows_Cpu"},
        {"memcpy_compaction", "BM_MemcpyCompactionBytes"},
        {"strided_rows", "BM_StridedRowsInPlace"},
        {"scissorhands_cuda", "BM_ScissorhandsUpdateSelect_Cuda"},
        {"compaction_cuda", "BM_CompactLayer_Cuda"},
        {"windowkv_cuda", "BM_WindowKvScoreSelect_Cuda"}};
    auto it = kNames.find(key);
    if (it != kNames.end()) return bench.rfind(it->second, 0) == 0;
    return key.rfind("d2d_", 0) == 0 && bench.find("BM_D2DCopy/" + key.substr(4)) == 0;
  }
};

}  // namespace
}  // namespace kvwarden::kernels

int main(int argc, char** argv) {
  using kvwarden::kernels::g_bps;
  benchmark::Initialize(&argc, argv);
  kvwarden::kernels::Reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  // One line for people, one `row|...` line for scripts/bench.sh.
  auto ratio = [](const char* what, const std::string& a, const std::string& b, const char* goal) {
    if (g_bps[a] > 0 && g_bps[b] > 0) {
      std::printf("%-34s %8.2f GB/s vs %8.2f GB/s reference: %.2fx (goal %s)\n", what, g_bps[a] / 1e9,
                  g_bps[b] / 1e9, g_bps[a] / g_bps[b], goal);
      std::printf("row|bench_kernels|%s|%.2f GB/s|%.2f GB/s %s|%.2fx|%s\n", what, g_bps[a] / 1e9, g_bps[b] / 1e9,
                  b.rfind("d2d", 0) == 0 ? "D2D copy" : "memcpy", g_bps[a] / g_bps[b], goal);
    }
  };
  std::printf("\n== bench_kernels summary (input bytes processed per second, same run)\n");
  ratio("scissorhands update+select (CPU)", "scissorhands_cpu", "memcpy_scissorhands", ">= 0.5x");
  ratio("windowkv score+select (CPU)", "windowkv_cpu", "memcpy_windowkv", ">= 0.3x");
  ratio("compaction (CPU), one-slot runs", "compaction_cpu", "memcpy_compaction", ">= 0.8x");
  ratio("compaction (CPU), random half kept", "compaction_random_cpu", "memcpy_compaction", "-");
  ratio("compaction (CPU), 8-slot runs", "compaction_windows_cpu", "memcpy_compaction", "-");
  ratio("strided in-place row copy (CPU)", "strided_rows", "memcpy_compaction", "-");
  ratio("scissorhands update+select (CUDA)", "scissorhands_cuda", "d2d_" + std::to_string(2 * 32 * 8 * 4096 * 52),
        ">= 0.5x");
  ratio("compaction (CUDA)", "compaction_cuda", "d2d_" + std::to_string(2 * 8 * 2048 * 256), ">= 0.8x");
  ratio("windowkv score+select, 32k prompt (CUDA)", "windowkv_cuda", "d2d_" + std::to_string(2 * 8 * 2048 * 256),
        "-");
  return 0;
}
