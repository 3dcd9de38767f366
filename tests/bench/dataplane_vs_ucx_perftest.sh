#!/usr/bin/env bash
# The UCX data plane next to ucx_perftest (Debian's ucx-utils), same transport, same
# size, same run: put and get bandwidth at 64 KiB and 1 MiB per operation, one-page get
# latency next to ucx_perftest's put latency, attached read vs memcpy.
# Builds nothing: needs $BUILD_DIR/bin/bench_dataplane (default build/) and ucx_perftest.
# The last line is put_bw_ratio_1MiB=<ratio> for the shared-memory transport.
#
# Usage: tests/bench/dataplane_vs_ucx_perftest.sh [seconds per kvwarden measurement]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${BUILD_DIR:-build}
SECONDS_PER=${1:-2}
BENCH="$BUILD_DIR/bin/bench_dataplane"
[[ -x "$BENCH" ]] || { echo "missing $BENCH (build with -DKVW_BUILD_BENCH=ON)" >&2; exit 2; }
command -v ucx_perftest > /dev/null || { echo "missing ucx_perftest (apt-get install ucx-utils)" >&2; exit 2; }
export UCX_NET_DEVICES=lo
SIZES=(65536 1048576)

# ucx_perftest TEST SIZE TLS -> the "Final:" line's fields
perftest() {
  local test=$1 size=$2 tls=$3 port iters server out
  port=$((20000 + RANDOM % 20000))
  iters=$(( (4 << 30) / size ))
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

declare -A OURS
for tls in shm tcp; do
  while read -r key rest; do
    case $key in
      put_bw_MiBps|get_bw_MiBps)
        size=$(sed -n 's/.*size=\([0-9]*\).*/\1/p' <<< "$rest")
        pattern=$(sed -n 's/.*pattern=\([a-z]*\).*/\1/p' <<< "$rest")
        OURS[$tls,$key,$size,$pattern]=$(sed -n 's/.*value=\([0-9.]*\).*/\1/p' <<< "$rest") ;;
      get_1page_p50_us)
        OURS[$tls,lat_rma]=$(sed -n 's/.*rma=\([0-9.]*\).*/\1/p' <<< "$rest")
        OURS[$tls,lat_leased]=$(sed -n 's/.*with_lease=\([0-9.]*\).*/\1/p' <<< "$rest")
        OURS[$tls,page]=$(sed -n 's/.*size=\([0-9]*\).*/\1/p' <<< "$rest") ;;
      attached_read_MiBps)
        OURS[$tls,attach]=$rest ;;
    esac
  done < <("$BENCH" --transports=$tls --sizes="$(IFS=,; echo "${SIZES[*]}")" --seconds="$SECONDS_PER" 2>/dev/null)
done

# ratio = kvwarden hot / ucx_perftest (both move the same bytes every operation);
# stream = kvwarden walking a 64 MiB sequence (memory-bound), for scale.
printf '%-5s %-4s %9s %14s %16s %7s %16s\n' TLS OP BYTES kvwarden_MiB/s ucx_perftest_MB/s ratio stream_MiB/s
ratio_shm_put_1m=0
for tls in shm tcp; do
  for size in "${SIZES[@]}"; do
    for op in put get; do
      test=ucp_${op}_bw
      [[ $op == get ]] && test=ucp_get
      ref=$(perftest "$test" "$size" "$tls" | awk '{print $7}')
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
  lat=$(perftest ucp_put_lat "$page" "$tls" | awk '{print $3}')
  printf '%-5s one-page (%s B) get p50: %s us RMA, %s us with its own lease; ucx_perftest put_lat p50 %s us\n' \
    "$tls" "$page" "${OURS[$tls,lat_rma]:-n/a}" "${OURS[$tls,lat_leased]:-n/a}" "${lat:-n/a}"
done
echo "attached read vs memcpy: ${OURS[shm,attach]:-n/a}"
echo "put_bw_ratio_1MiB=$ratio_shm_put_1m"
