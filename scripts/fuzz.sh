#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, ASan+UBSan, warnings as errors, build-fuzz/) and
# runs each for SECONDS (default 30) from its seed corpus in tests/fuzz/corpus/<fuzzer>/. New inputs
# go to a scratch corpus, so the committed seeds stay as they are; a crash leaves its
# input in build-fuzz/artifacts/ and fails the script.
#   scripts/fuzz.sh [SECONDS] [FUZZER...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
bash scripts/install_deps.sh clang-14 libfuzzer-14-dev
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKVW_FUZZ=ON -DKVW_BUILD_BENCH=OFF -DKVW_WERROR=ON
fi
# The clang build is also the compiler's check of what the comments promise: -Wall
# -Wextra -Wthread-safety as errors over the daemon, the client library and kvwctl.
cmake --build build-fuzz --target fuzzers kvw_client kvwctl --parallel "$(nproc)"
fuzzers=("$@")
[ ${#fuzzers[@]} -eq 0 ] && fuzzers=(fuzz_policy_stats fuzz_config fuzz_attach fuzz_rpc)
mkdir -p build-fuzz/artifacts
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
for f in "${fuzzers[@]}"; do
  scratch=$(mktemp -d)
  echo "== $f: ${seconds}s"
  # -timeout: one input taking 10 s is a stall; the daemon's own threads keep running.
  build-fuzz/bin/"$f" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/artifacts/"$f"- "$scratch" tests/fuzz/corpus/"$f" 2>&1 |
    grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs|stat::number_of_executed_units|ERROR|SUMMARY|==[0-9]+==|invariant|answered" || true
  status=${PIPESTATUS[0]}
  rm -rf "$scratch"
  if [ "$status" -ne 0 ]; then
    echo "== $f FAILED (exit $status); inputs in build-fuzz/artifacts/" >&2
    exit 1
  fi
done
echo "== fuzzers clean"
