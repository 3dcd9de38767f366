#!/usr/bin/env bash
# Builds and runs every test: the Release build (CUDA kernels compiled when nvcc is
# present; gpu-labelled tests skip without a device; a short soak), an ASan+UBSan build
# on the CUDA emulator (tests/cuda_emulator) of the unit, integration and gpu tests, then
# every libFuzzer target for a bounded time (KVW_FUZZ_SECONDS, default 20 each; their
# clang build also fails on any -Wall -Wextra -Wthread-safety warning). First, the
# clang-format check of changed files (scripts/format_check.sh).
# .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

# Every package both stages need, with one `apt-get update` on a fresh machine. kubectl
# and systemd-analyze only when missing (another kubectl package may own the path).
extra=()
command -v kubectl > /dev/null || extra+=(kubernetes-client)
command -v systemd-analyze > /dev/null || extra+=(systemd)
bash scripts/install_deps.sh clang-14 clang-format-14 libfuzzer-14-dev python3-grpcio python3-protobuf python3-numpy python3-pytest python3-venv python3-setuptools python3-wheel \
  python3-torch python3-matplotlib python3-yaml bible-kjv prometheus yamllint etcd-server etcd-client "${extra[@]}"

echo "== clang-format of the files changed since the check began"
bash scripts/format_check.sh

echo "== Release build + all tests"
bash scripts/build.sh build
(cd build && ctest --output-on-failure --timeout 300 -j2)

echo "== ASan+UBSan build on the CUDA emulator + unit, integration and gpu tests"
bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DKVW_SANITIZE=ON -DKVW_BUILD_BENCH=OFF \
  -DKVW_CUDA_EMULATOR=ON
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure --timeout 600 -j2 -L 'unit|integration|gpu')

echo "== fuzzers, ${KVW_FUZZ_SECONDS:-20} s each"
bash scripts/fuzz.sh "${KVW_FUZZ_SECONDS:-20}"

echo "== all tests passed in $(( $(date +%s) - start ))s"
