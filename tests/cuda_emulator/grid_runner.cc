#include "tests/cuda_emulator/grid_runner.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define KVW_EMULATOR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVW_EMULATOR_ASAN 1
#endif
#endif
#if defined(KVW_EMULATOR_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

#if defined(__x86_64__)
// Saves the callee-saved registers, MXCSR and the x87 control word on the current
// stack, stores the stack pointer to *save_sp, and resumes the context at load_sp
// (ucontext's swapcontext would make two signal-mask system calls per switch).
extern "C" void kvw_cuda_emulator_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl kvw_cuda_emulator_switch
  .hidden kvw_cuda_emulator_switch
  .type kvw_cuda_emulator_switch, @function
kvw_cuda_emulator_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size kvw_cuda_emulator_switch, .-kvw_cuda_emulator_switch
)");
#endif

namespace kvw_cuda_emulator {
namespace {

constexpr size_t kStackBytes = size_t{256} << 10;  // ASan's frames are large
constexpr size_t kGuardBytes = 4096;

enum class State { kReady, kAtSync, kAtBallot, kDone };

struct Context {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

// A fiber runs one emulated thread after another: its loop calls the kernel body and
// parks when it returns, so frames always unwind and a stack is reused clean.
struct Fiber {
  Context ctx;
  uint8_t* stack = nullptr;  // lowest usable byte; a guard page lies below
  uint3 tid{};
  unsigned linear = 0;
  State state = State::kDone;
  unsigned mask = 0;  // at a ballot: the lanes it names, and its vote
  bool vote = false;
  unsigned ballot = 0;  // the ballot's result, when released
  void* asan_fake_stack = nullptr;
};

// One per OS thread that runs grids.
struct Runner {
  std::vector<std::unique_ptr<Fiber>> fibers;
  Context scheduler;
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_bytes = 0;
  Fiber* current = nullptr;
  const std::function<void()>* body = nullptr;
  ~Runner() {
    for (auto& f : fibers) munmap(f->stack - kGuardBytes, kStackBytes + kGuardBytes);
  }
};
thread_local Runner t_runner;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(
      stderr,
      "kvw cuda emulator: %s (block %u,%u,%u of grid %u,%u,%u; block of %u,%u,%u threads)\n", what,
      blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x, gridDim.y, gridDim.z, blockDim.x, blockDim.y,
      blockDim.z);
  std::abort();
}

void AsanStart(void** fake_stack, const void* bottom, size_t bytes) {
#if defined(KVW_EMULATOR_ASAN)
  __sanitizer_start_switch_fiber(fake_stack, bottom, bytes);
#else
  (void)fake_stack, (void)bottom, (void)bytes;
#endif
}
void AsanFinish(void* fake_stack, const void** old_bottom, size_t* old_bytes) {
#if defined(KVW_EMULATOR_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack, old_bottom, old_bytes);
#else
  (void)fake_stack, (void)old_bottom, (void)old_bytes;
#endif
}

void RawSwitch(Context* save, Context* load) {
#if defined(__x86_64__)
  kvw_cuda_emulator_switch(&save->sp, load->sp);
#else
  swapcontext(&save->uc, &load->uc);
#endif
}

// Fiber -> scheduler.
void Park(Fiber* f) {
  Runner& r = t_runner;
  AsanStart(&f->asan_fake_stack, r.scheduler_stack, r.scheduler_stack_bytes);
  RawSwitch(&f->ctx, &r.scheduler);
  AsanFinish(f->asan_fake_stack, &r.scheduler_stack, &r.scheduler_stack_bytes);
}

// Scheduler -> fiber, until it parks.
void Resume(Fiber* f) {
  Runner& r = t_runner;
  r.current = f;
  threadIdx = f->tid;
  void* fake_stack = nullptr;
  AsanStart(&fake_stack, f->stack, kStackBytes);
  RawSwitch(&r.scheduler, &f->ctx);
  AsanFinish(fake_stack, nullptr, nullptr);
  r.current = nullptr;
}

void FiberMain() {
  Runner& r = t_runner;
  AsanFinish(nullptr, &r.scheduler_stack, &r.scheduler_stack_bytes);
  for (;;) {
    (*r.body)();
    Fiber* f = r.current;
    f->state = State::kDone;
    Park(f);
  }
}

std::unique_ptr<Fiber> NewFiber() {
  auto f = std::make_unique<Fiber>();
  void* m = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) Fail("no memory for a fiber stack");
  mprotect(m, kGuardBytes, PROT_NONE);
  f->stack = static_cast<uint8_t*>(m) + kGuardBytes;
#if defined(__x86_64__)
  // The frame kvw_cuda_emulator_switch pops: control words, six registers, then it
  // "returns" into FiberMain with the stack aligned as after a call.
  auto* sp = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(f->stack + kStackBytes) &
                                         ~uintptr_t{15});
  *--sp = 0;  // FiberMain's return address: it never returns
  *--sp = reinterpret_cast<uint64_t>(&FiberMain);
  for (int i = 0; i < 6; ++i) *--sp = 0;
  *--sp = 0x037F00001F80ull;  // MXCSR default (low half), x87 control word default
  f->ctx.sp = sp;
#else
  getcontext(&f->ctx.uc);
  f->ctx.uc.uc_stack.ss_sp = f->stack;
  f->ctx.uc.uc_stack.ss_size = kStackBytes;
  f->ctx.uc.uc_link = nullptr;
  makecontext(&f->ctx.uc, FiberMain, 0);
#endif
  return f;
}

// Releases warp `w`'s ballot once every lane it names has reached it. Returns whether
// it released one.
bool ReleaseBallot(Runner& r, unsigned w, unsigned n) {
  unsigned names = 0;
  for (unsigned lane = 0; lane < 32 && w * 32 + lane < n; ++lane) {
    const Fiber& f = *r.fibers[w * 32 + lane];
    if (f.state == State::kAtBallot) names |= f.mask;
  }
  if (names == 0) return false;
  unsigned ballot = 0;
  for (unsigned lane = 0; lane < 32; ++lane) {
    if ((names >> lane & 1u) == 0) continue;
    if (w * 32 + lane >= n) Fail("__ballot_sync names a lane past the end of the block");
    const Fiber& f = *r.fibers[w * 32 + lane];
    if (f.state == State::kDone) Fail("__ballot_sync names a lane that has exited");
    if (f.state != State::kAtBallot)
      Fail("deadlock: __ballot_sync names a lane waiting at __syncthreads");
    if (f.vote) ballot |= 1u << lane;
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    if ((names >> lane & 1u) == 0) continue;
    Fiber& f = *r.fibers[w * 32 + lane];
    f.ballot = ballot;
    f.state = State::kReady;
  }
  return true;
}

// Runs warp `w` as far as it goes before the block's barrier: its lanes, and again
// after each of its ballots, so one warp can run ahead of the others as on a GPU.
void RunWarp(Runner& r, unsigned w, unsigned n, bool backward) {
  const unsigned first = w * 32, lanes = n - first < 32 ? n - first : 32;
  do {
    for (unsigned k = 0; k < lanes; ++k) {
      Fiber* f = r.fibers[first + (backward ? lanes - 1 - k : k)].get();
      if (f->state == State::kReady) Resume(f);
    }
  } while (ReleaseBallot(r, w, n));
}

// Every live thread waits at the block's barrier (or all are done: returns false).
bool ReleaseBlockBarrier(Runner& r, unsigned n) {
  unsigned done = 0;
  for (unsigned i = 0; i < n; ++i) done += r.fibers[i]->state == State::kDone;
  if (done == n) return false;
  if (done > 0)
    Fail("__syncthreads reached after some threads of the block exited (divergent barrier)");
  for (unsigned i = 0; i < n; ++i) r.fibers[i]->state = State::kReady;
  return true;
}

Fiber* Current(const char* what) {
  Fiber* f = t_runner.current;
  if (f == nullptr) {
    std::fprintf(stderr, "kvw cuda emulator: %s called outside a kernel\n", what);
    std::abort();
  }
  return f;
}

}  // namespace

void RunGrid(dim3 grid, dim3 block, const std::function<void()>& body) {
  static std::atomic<unsigned> launches{0};
  const unsigned launch = launches++;
  Runner& r = t_runner;
  const unsigned n = block.x * block.y * block.z;
  while (r.fibers.size() < n) r.fibers.push_back(NewFiber());
  r.body = &body;
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = {x, y, z};
        for (unsigned i = 0; i < n; ++i) {
          Fiber& f = *r.fibers[i];
          f.linear = i;
          f.tid = {i % block.x, i / block.x % block.y, i / (block.x * block.y)};
          f.state = State::kReady;
        }
        const unsigned warps = (n + 31) / 32;
        for (unsigned interval = 0;; ++interval) {
          const bool backward = ((launch + interval) & 1u) != 0;
          for (unsigned k = 0; k < warps; ++k)
            RunWarp(r, backward ? warps - 1 - k : k, n, backward);
          if (!ReleaseBlockBarrier(r, n)) break;
        }
      }
    }
  }
  r.body = nullptr;
}

}  // namespace kvw_cuda_emulator

void __syncthreads() {
  kvw_cuda_emulator::Fiber* f = kvw_cuda_emulator::Current("__syncthreads");
  f->state = kvw_cuda_emulator::State::kAtSync;
  kvw_cuda_emulator::Park(f);
}

unsigned int __ballot_sync(unsigned int mask, int predicate) {
  kvw_cuda_emulator::Fiber* f = kvw_cuda_emulator::Current("__ballot_sync");
  if ((mask >> (f->linear % 32) & 1u) == 0) {
    std::fprintf(stderr, "kvw cuda emulator: __ballot_sync by a lane its mask does not name\n");
    std::abort();
  }
  f->mask = mask;
  f->vote = predicate != 0;
  f->state = kvw_cuda_emulator::State::kAtBallot;
  kvw_cuda_emulator::Park(f);
  return f->ballot;
}
