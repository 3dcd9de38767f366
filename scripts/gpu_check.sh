#!/usr/bin/env bash
# The one-command device check (issue 10). Two halves, because the device machine has
# CUDA but none of our Debian libraries:
#
#   scripts/gpu_check.sh pack   here: builds (Release, CUDA, static cudart) and gathers
#                               into .gpucheck/ every `gpu` test binary, kvwardend,
#                               bench_kernels and the shared libraries they load (from
#                               ldd, glibc excepted), plus UCX's transport modules.
#   scripts/gpu_check.sh run    there, from the repository root with .gpucheck carried:
#                               first cuda_probe (driver, devices, a 1 MiB round trip;
#                               nothing else runs without it), then every gpu test (the
#                               retention end-to-end test drives a daemon with a cuda:0
#                               pool), bench_kernels with its CUDA rows, bench_stats into
#                               a cpu and a cuda:0 pool; writes one results file,
#                               $OUT/gpu_check.txt (./gpu_check.txt without $OUT).
#                               Exit status: the number of failed steps (0 = all passed).
#                               A gpu test that SKIPS counts as failed: on a device
#                               nothing may pass by skipping.
#
# With the device tool: run(command="bash scripts/gpu_check.sh run", carry=[".gpucheck"],
# timeout_s=480). Every step's timeout comes out of one budget (GPU_CHECK_BUDGET_S,
# default 420 s), so one hang cannot spend the lease; pack refuses a .gpucheck that,
# with the tree, exceeds what the device tool carries (64 MiB).
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
tests=(policy_kernels_cuda_test copy_kv_cuda_test cuda_pool_test attach_cuda_test retention_e2e_cuda_test)

case "$mode" in
pack)
  set -e
  if [ ! -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc > /dev/null; then
    echo "gpu_check pack: no nvcc here (expected at /usr/local/cuda/bin): nothing to check on a device" >&2
    exit 2
  fi
  bash scripts/build.sh build
  cmake --build build --target "${tests[@]}" kvwardend bench_kernels bench_stats
  rm -rf .gpucheck
  mkdir -p .gpucheck/bin .gpucheck/lib .gpucheck/ucx
  cmake --build build --target cuda_probe
  for b in "${tests[@]}" kvwardend bench_kernels bench_stats cuda_probe; do cp build/bin/"$b" .gpucheck/bin/; done
  # Shared libraries the binaries load, but not glibc's own (the device has its own).
  for b in .gpucheck/bin/*; do ldd "$b"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
    grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' | while read -r lib; do
      cp -L "$lib" .gpucheck/lib/
    done
  cp -L /usr/lib/x86_64-linux-gnu/ucx/*.so* .gpucheck/ucx/ 2>/dev/null || true
  git rev-parse --short HEAD > .gpucheck/commit
  # The newest glibc symbol version the carried libraries need (the device has its own
  # glibc: run prints both, so a mismatch reads as what it is).
  for f in .gpucheck/lib/* .gpucheck/bin/*; do objdump -T "$f" 2>/dev/null; done |
    grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 > .gpucheck/glibc_needed || true
  du -sh .gpucheck
  # The device tool carries at most 64 MiB: .gpucheck plus the tracked tree.
  carried=$(( $(du -sb .gpucheck | cut -f1) + $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) ))
  if [ "$carried" -gt $((62 << 20)) ]; then
    echo "gpu_check pack: .gpucheck and the tree are $((carried >> 20)) MiB; the device tool carries 64 MiB" >&2
    exit 3
  fi
  echo "carried: $((carried >> 20)) MiB of 64"
  echo "gpu_check pack: ready; now run 'bash scripts/gpu_check.sh run' on the device with carry=[\".gpucheck\"]"
  ;;
run)
  [ -d .gpucheck/bin ] || { echo "gpu_check run: no .gpucheck/ (run 'pack' first and carry it)" >&2; exit 2; }
  results=${OUT:-.}/gpu_check.txt
  here=$PWD/.gpucheck
  export LD_LIBRARY_PATH=$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export KVW_BIN_DIR=$here/bin UCX_MODULE_DIR=$here/ucx UCX_NET_DEVICES=lo TMPDIR=${TMPDIR:-/tmp}
  failed=0
  budget=${GPU_CHECK_BUDGET_S:-420}
  start=$SECONDS
  # step_timeout CAP: CAP seconds, or what is left of the budget (0 when it is spent).
  step_timeout() {
    local left=$((budget - (SECONDS - start)))
    if [ "$left" -lt 10 ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
  }
  {
    echo "== kvwarden gpu_check, commit $(cat .gpucheck/commit 2>/dev/null), $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
    echo "cpus $(nproc), kernel $(uname -r), $(ldd --version 2>&1 | head -1)"
    echo "carried libraries need up to $(cat .gpucheck/glibc_needed 2>/dev/null || echo '?')"
  } > "$results"
  echo "== cuda_probe" | tee -a "$results"
  if ! timeout 60 "$here/bin/cuda_probe" 2>&1 | tee -a "$results"; then  # pipefail: the probe's status
    echo "!! cuda_probe FAILED: the carried binaries do not reach a working device; nothing else runs" | tee -a "$results"
    exit 1
  fi
  for t in "${tests[@]}"; do
    echo "== $t" | tee -a "$results"
    limit=$(step_timeout 120)
    if [ "$limit" -eq 0 ]; then
      failed=$((failed + 1))
      echo "!! $t NOT RUN: the ${budget} s budget is spent" | tee -a "$results"
      continue
    fi
    if timeout "$limit" "$here/bin/$t" --gtest_color=no > "$results.part" 2>&1; then
      grep -E '^\[  (PASSED|SKIPPED|FAILED) |^\[==========\]' "$results.part" | tee -a "$results"
      if grep -qE '^\[  SKIPPED \]' "$results.part"; then
        failed=$((failed + 1))
        grep -E '^\[  SKIPPED \]' "$results.part" | head -3 >> "$results"
        echo "!! $t SKIPPED tests on a device: counted as failed" | tee -a "$results"
      fi
    else
      failed=$((failed + 1))
      tail -c 20000 "$results.part" >> "$results"
      echo "!! $t FAILED (or passed its ${limit} s timeout)" | tee -a "$results"
    fi
  done
  rm -f "$results.part"
  echo "== bench_kernels" | tee -a "$results"
  limit=$(step_timeout 90)
  if [ "$limit" -eq 0 ] || ! timeout "$limit" "$here/bin/bench_kernels" --benchmark_min_time=0.1 >> "$results" 2>&1; then
    failed=$((failed + 1))
    echo "!! bench_kernels FAILED or out of budget" | tee -a "$results"
  fi
  for device in cpu cuda:0; do
    echo "== bench_stats, pool on $device" | tee -a "$results"
    limit=$(step_timeout 30)
    if [ "$limit" -eq 0 ] || ! timeout "$limit" "$here/bin/bench_stats" 2 8 "$device" >> "$results" 2>&1; then
      failed=$((failed + 1))
      echo "!! bench_stats $device FAILED or out of budget" | tee -a "$results"
    fi
  done
  echo "== elapsed $((SECONDS - start)) s of a ${budget} s budget" | tee -a "$results"
  sed -n '/== bench_kernels summary/,$p' "$results"
  echo "== gpu_check: $failed failed step(s); results in $results" | tee -a "$results"
  exit "$failed"
  ;;
*)
  echo "usage: scripts/gpu_check.sh pack|run" >&2
  exit 2
  ;;
esac
