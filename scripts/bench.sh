#!/usr/bin/env bash
# Builds and runs every benchmark, then prints one table: each figure, its reference
# measured in the same run, the ratio and the goal (issue 11), after the machine's
# description. Ratios travel between machines; absolute numbers do not.
#   scripts/bench.sh [seconds per data-plane measurement=1] [rounds=3] [runs=1]
# With runs > 1 the whole suite runs that many times and the table's ratio column lists
# every run's ratio (the spread); value and reference are the last run's.
# Needs ucx_perftest (Debian's ucx-utils) and iperf3 (installed when missing) for the data plane rows.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh ucx-utils iperf3 etcd-server python3-grpcio python3-protobuf python3-numpy
bash scripts/build.sh build > /dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "== machine"
echo "cores $(nproc); kernel $(uname -r); $(free -g | awk '/^Mem:/ {print $2}') GiB;" \
  "THP $(sed -n 's/.*\[\(.*\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo n/a);" \
  "UCX $(ucx_info -v 2>/dev/null | sed -n 's/^# \(Library version:\|Version\) //p' | head -1);" \
  "GPU $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)"
runs=${3:-1}
for run in $(seq 1 "$runs"); do
  if [ "$runs" -gt 1 ]; then echo "==== run $run of $runs"; fi
  for step in "build/bin/bench_kernels --benchmark_min_time=0.5" "build/bin/bench_control" \
              "build/bin/bench_stats 3 8" "tests/bench/dataplane_vs_ucx_perftest.sh ${1:-1} ${2:-3}" \
              "build/bin/bench_migration" \
              "env PYTHONPATH=build/python:client/python /usr/bin/python3 -m kvwarden.bench --kvwardend build/bin/kvwardend"; do
    echo "== $step"
    # Each bench prints its own summary; the rows are collected for the table.
    if ! $step > "$out.log" 2>&1; then  # word splitting intended: a command and its args
      echo "!! $step failed:"; tail -20 "$out.log"; exit 1
    fi
    sed -n '/summary/,$p' "$out.log" | grep -v '^row|' || true
    grep '^row|' "$out.log" >> "$out" || true
  done
done
rm -f "$out.log"
echo
echo "== kvwarden benchmarks: figure, same-run reference, ratio, goal"
{
  echo "BENCH|FIGURE|VALUE|REFERENCE|RATIO|GOAL"
  # One line per figure, in first-seen order; ratios of every run joined with " ; ".
  cut -d'|' -f2- "$out" | awk -F'|' -v OFS='|' '
    { key = $1 "|" $2; if (!(key in ratio)) { order[++n] = key; ratio[key] = $5 } else ratio[key] = ratio[key] " ; " $5
      value[key] = $3; ref[key] = $4; goal[key] = $6 }
    END { for (i = 1; i <= n; ++i) { k = order[i]; print k, value[k], ref[k], ratio[k], goal[k] } }'
} | awk -F'|' '{ for (i = 1; i <= NF; ++i) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NR; nf = NF }
  END { for (r = 1; r <= n; ++r) { line = ""; for (i = 1; i <= nf; ++i) line = line sprintf("%-" w[i] + 2 "s", cell[r, i]); print line } }'
