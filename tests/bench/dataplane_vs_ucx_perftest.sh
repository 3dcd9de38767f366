#!/usr/bin/env bash
# The data plane next to its references, same size, same run: shared memory (UCX RMA)
# against ucx_perftest (Debian's ucx-utils), the daemon-served TCP path against one
# iperf3 stream on loopback (the daemon's UCX no longer runs tcp: it let peers address
# any memory); put and get bandwidth at 64 KiB and 1 MiB per operation, one-page get
# latency next to ucx_perftest's put latency, attached read vs memcpy.
# Builds nothing: needs $BUILD_DIR/bin/bench_dataplane (default build/), ucx_perftest
# and iperf3.
# The last line is put_bw_ratio_1MiB=<ratio> for the shared-memory transport.
#
# This machine is shared and noisy: each side is measured ROUNDS times, alternating, and
# the best of each is compared.
#
# Usage: tests/bench/dataplane_vs_ucx_perftest.sh [seconds per kvwarden measurement] [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${BUILD_DIR:-build}
SECONDS_PER=${1:-1}
ROUNDS=${2:-3}
BENCH="$BUILD_DIR/bin/bench_dataplane"
[[ -x "$BENCH" ]] || { echo "missing $BENCH (build with -DKVW_BUILD_BENCH=ON)" >&2; exit 2; }
command -v ucx_perftest > /dev/null || { echo "missing ucx_perftest (apt-get install ucx-utils)" >&2; exit 2; }
command -v iperf3 > /dev/null || { echo "missing iperf3 (apt-get install iperf3)" >&2; exit 2; }
export UCX_NET_DEVICES=lo
SIZES=(65536 1048576)

# ucx_perftest TEST SIZE TLS -> the "Final:" line's fields
perftest() {
  local test=$1 size=$2 tls=$3 port iters server out
  port=$((20000 + RANDOM % 20000))
  iters=$(( (4 << 30) / size ))
  [[ $tls == tcp ]] && iters=$(( (256 << 20) / size ))  # TCP (and its emulated get) is slow
  [[ $test == *lat* ]] && iters=20000
  UCX_TLS=$tls ucx_perftest -p "$port" > /dev/null 2>&1 &
  server=$!
  sleep 0.3
  out=$(UCX_TLS=$tls timeout 120 ucx_perftest 127.0.0.1 -p "$port" -t "$test" -s "$size" -n "$iters" -w 1000 2>/dev/null \
          | awk '/^Final:/ {print}') || true
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  echo "$out"
}

# One iperf3 TCP stream on loopback for 2 s -> MiB/s received.
iperf_mibps() {
  local port server
  port=$((20000 + RANDOM % 20000))
  iperf3 -s -1 -p "$port" > /dev/null 2>&1 &
  server=$!
  sleep 0.3
  timeout 30 iperf3 -c 127.0.0.1 -p "$port" -t 2 -J 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8 / 2**20))' || true
  wait "$server" 2>/dev/null || true
}

# best KEY VALUE [min]: keeps the largest (or smallest, for latencies) value seen.
declare -A OURS REF PROTO
best() {
  local -n table=$1
  local key=$2 value=$3 mode=${4:-max}
  [[ -z $value ]] && return
  if [[ -z ${table[$key]:-} ]] || awk -v a="$value" -v b="${table[$key]}" -v m="$mode" \
       'BEGIN { exit !((m == "max" && a > b) || (m == "min" && a < b)) }'; then
    table[$key]=$value
  fi
}

for round in $(seq 1 "$ROUNDS"); do
  for tls in shm tcp; do
    while read -r key rest; do
      case $key in
        ucx_proto)  # the lanes/protocols UCX chose (printed once per transport below)
          [[ $round == 1 ]] && PROTO[$tls]+="$rest"$'\n' ;;
        put_bw_MiBps|get_bw_MiBps)
          size=$(sed -n 's/.*size=\([0-9]*\).*/\1/p' <<< "$rest")
          pattern=$(sed -n 's/.*pattern=\([a-z]*\).*/\1/p' <<< "$rest")
          best OURS "$tls,$key,$size,$pattern" "$(sed -n 's/.*value=\([0-9.]*\).*/\1/p' <<< "$rest")" ;;
        get_1page_p50_us)
          best OURS "$tls,lat_rma" "$(sed -n 's/.* rma=\([0-9.]*\).*/\1/p' <<< "$rest")" min
          best OURS "$tls,lat_rma_stream" "$(sed -n 's/.*rma_stream=\([0-9.]*\).*/\1/p' <<< "$rest")" min
          best OURS "$tls,lat_leased" "$(sed -n 's/.*with_lease=\([0-9.]*\).*/\1/p' <<< "$rest")" min
          OURS[$tls,page]=$(sed -n 's/.*size=\([0-9]*\).*/\1/p' <<< "$rest") ;;
        attached_read_MiBps)
          best OURS "$tls,attach_ratio" "$(sed -n 's/.*ratio=\([0-9.]*\).*/\1/p' <<< "$rest")"
          [[ ${OURS[$tls,attach_ratio]} == "$(sed -n 's/.*ratio=\([0-9.]*\).*/\1/p' <<< "$rest")" ]] && OURS[$tls,attach]=$rest ;;
      esac
    done < <("$BENCH" --transports=$tls --sizes="$(IFS=,; echo "${SIZES[*]}")" --seconds="$SECONDS_PER" 2>/dev/null)
    if [[ $tls == tcp ]]; then
      tcp_ref=$(iperf_mibps)
      for size in "${SIZES[@]}"; do
        best REF "$tls,put,$size" "$tcp_ref"
        best REF "$tls,get,$size" "$tcp_ref"
      done
    else
      for size in "${SIZES[@]}"; do
        best REF "$tls,put,$size" "$(perftest ucp_put_bw "$size" "$tls" | awk '{print $7}')"
        best REF "$tls,get,$size" "$(perftest ucp_get "$size" "$tls" | awk '{print $7}')"
      done
    fi
    best REF "$tls,lat" "$(perftest ucp_put_lat "${OURS[$tls,page]:-65536}" "$tls" | awk '{print $3}')" min
  done
done

echo "== dataplane summary (best of $ROUNDS rounds each side)"
# ratio = kvwarden hot / ucx_perftest (both move the same bytes every operation; ucx_perftest
# prints bytes / 2^20 per second under the name "MB/s", so both columns are MiB/s);
# stream = kvwarden walking a 64 MiB sequence (memory-bound), for scale.
# (tcp: the reference is one iperf3 stream, whatever the size.)
printf '%-5s %-4s %9s %14s %16s %7s %16s\n' TLS OP BYTES kvwarden_MiB/s reference_MiB/s ratio stream_MiB/s
ratio_shm_put_1m=0
for tls in shm tcp; do
  for size in "${SIZES[@]}"; do
    for op in put get; do
      ref=${REF[$tls,$op,$size]:-}
      ours=${OURS[$tls,${op}_bw_MiBps,$size,hot]:-0}
      stream=${OURS[$tls,${op}_bw_MiBps,$size,stream]:-n/a}
      ratio=$(awk -v a="$ours" -v b="${ref:-0}" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')
      printf '%-5s %-4s %9s %14s %16s %7s %16s\n' "$tls" "$op" "$size" "$ours" "${ref:-n/a}" "$ratio" "$stream"
      if [[ $tls == shm && $op == put && $size == 1048576 ]]; then ratio_shm_put_1m=$ratio; fi
    done
  done
done
echo
for tls in shm tcp; do
  page=${OURS[$tls,page]:-65536}
  lat=${REF[$tls,lat]:-}
  printf '%-5s one-page (%s B) get p50: %s us RMA same page (%s us walking 64 MiB), %s us with its own lease; ucx_perftest put_lat p50 %s us\n' \
    "$tls" "$page" "${OURS[$tls,lat_rma]:-n/a}" "${OURS[$tls,lat_rma_stream]:-n/a}" "${OURS[$tls,lat_leased]:-n/a}" "${lat:-n/a}"
done
echo "attached read vs memcpy: ${OURS[shm,attach]:-n/a}"
echo
echo "UCX lanes and protocols per size range (kvwarden's endpoint; a fallback shows here):"
for tls in shm tcp; do printf '%s\n' "${PROTO[$tls]:-transports=$tls n/a}" | sed '/^$/d; s/^/  /'; done
echo "put_bw_ratio_1MiB=$ratio_shm_put_1m"
# row|bench|figure|value|reference|ratio|goal lines for scripts/bench.sh.
for tls in shm tcp; do
  for size in "${SIZES[@]}"; do
    for op in put get; do
      ref=${REF[$tls,$op,$size]:-}
      ours=${OURS[$tls,${op}_bw_MiBps,$size,hot]:-0}
      ratio=$(awk -v a="$ours" -v b="${ref:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }')
      goal='>= 0.8x' reference='iperf3 (1 stream)'
      [[ $tls == shm ]] && goal='>= 0.9x' reference='ucx_perftest'
      echo "row|bench_dataplane|$tls $op $((size / 1024)) KiB|$ours MiB/s|${ref:-n/a} MiB/s $reference|$ratio|$goal"
    done
  done
  rma=${OURS[$tls,lat_rma]:-}
  lat=${REF[$tls,lat]:-}
  ratio=$(awk -v a="${rma:-0}" -v b="${lat:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else print "n/a" }')
  goal='-'
  [[ $tls == shm ]] && goal='<= 2x'
  echo "row|bench_dataplane|$tls one-page get p50|${rma:-n/a} us|${lat:-n/a} us ucx_perftest put_lat|$ratio|$goal"
done
attach=${OURS[shm,attach]:-}
echo "row|bench_dataplane|attached read, $(sed -n 's/.*size=\([0-9]*\).*/\1/p' <<< "$attach") B|$(sed -n 's/.*value=\([0-9.]*\).*/\1/p' <<< "$attach") MiB/s|$(sed -n 's/.*memcpy=\([0-9.]*\).*/\1/p' <<< "$attach") MiB/s memcpy|${OURS[shm,attach_ratio]:-n/a}x|>= 0.95x"
