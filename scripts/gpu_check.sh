#!/usr/bin/env bash
# The one-command device check (issue 10). Two halves, because the device machine has
# CUDA but none of our Debian libraries:
#
#   scripts/gpu_check.sh pack   here: builds (Release, CUDA, static cudart) and gathers
#                               into .gpucheck/ every `gpu` test binary, kvwardend,
#                               bench_kernels and the shared libraries they load (from
#                               ldd, glibc excepted), plus UCX's transport modules.
#   scripts/gpu_check.sh run    there, from the repository root with .gpucheck carried:
#                               runs every gpu test (the retention end-to-end test
#                               drives a daemon with a cuda:0 pool), then bench_kernels
#                               with its CUDA rows, bench_stats (stats ingest from 8
#                               streams) into a cpu and a cuda:0 pool; writes one results file,
#                               $OUT/gpu_check.txt (./gpu_check.txt without $OUT).
#                               Exit status: the number of failed steps (0 = all passed).
#
# With the device tool: run(command="bash scripts/gpu_check.sh run", carry=[".gpucheck"],
# timeout_s=480). It is sized to finish in about 5 minutes of device time.
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
  for b in "${tests[@]}" kvwardend bench_kernels bench_stats; do cp build/bin/"$b" .gpucheck/bin/; done
  # Shared libraries the binaries load, but not glibc's own (the device has its own).
  for b in .gpucheck/bin/*; do ldd "$b"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
    grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' | while read -r lib; do
      cp -L "$lib" .gpucheck/lib/
    done
  cp -L /usr/lib/x86_64-linux-gnu/ucx/*.so* .gpucheck/ucx/ 2>/dev/null || true
  git rev-parse --short HEAD > .gpucheck/commit
  du -sh .gpucheck
  echo "gpu_check pack: ready; now run 'bash scripts/gpu_check.sh run' on the device with carry=[\".gpucheck\"]"
  ;;
run)
  [ -d .gpucheck/bin ] || { echo "gpu_check run: no .gpucheck/ (run 'pack' first and carry it)" >&2; exit 2; }
  results=${OUT:-.}/gpu_check.txt
  here=$PWD/.gpucheck
  export LD_LIBRARY_PATH=$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export KVW_BIN_DIR=$here/bin UCX_MODULE_DIR=$here/ucx UCX_NET_DEVICES=lo TMPDIR=${TMPDIR:-/tmp}
  failed=0
  {
    echo "== kvwarden gpu_check, commit $(cat .gpucheck/commit 2>/dev/null), $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
    echo "cpus $(nproc), kernel $(uname -r)"
  } > "$results"
  for t in "${tests[@]}"; do
    echo "== $t" | tee -a "$results"
    if timeout 240 "$here/bin/$t" --gtest_color=no > "$results.part" 2>&1; then
      grep -E '^\[  (PASSED|SKIPPED|FAILED) |^\[==========\]' "$results.part" | tee -a "$results"
    else
      failed=$((failed + 1))
      cat "$results.part" >> "$results"
      echo "!! $t FAILED" | tee -a "$results"
    fi
    grep -E '^\[  SKIPPED \]' "$results.part" | head -3 >> "$results" || true
  done
  rm -f "$results.part"
  echo "== bench_kernels" | tee -a "$results"
  if ! timeout 180 "$here/bin/bench_kernels" --benchmark_min_time=0.2 >> "$results" 2>&1; then
    failed=$((failed + 1))
    echo "!! bench_kernels FAILED" | tee -a "$results"
  fi
  for device in cpu cuda:0; do
    echo "== bench_stats, pool on $device" | tee -a "$results"
    if ! timeout 60 "$here/bin/bench_stats" 3 8 "$device" >> "$results" 2>&1; then
      failed=$((failed + 1))
      echo "!! bench_stats $device FAILED" | tee -a "$results"
    fi
  done
  sed -n '/== bench_kernels summary/,$p' "$results"
  echo "== gpu_check: $failed failed step(s); results in $results" | tee -a "$results"
  exit "$failed"
  ;;
*)
  echo "usage: scripts/gpu_check.sh pack|run" >&2
  exit 2
  ;;
esac
