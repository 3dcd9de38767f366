#!/usr/bin/env bash
# The main job: build, start kvwardend on a free loopback port with a CPU pool, run a
# workload of two tenants from several worker processes, print a summary and the admin
# CLI's view, and stop the daemon by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${KVW_BUILD_DIR:-build}
bash scripts/build.sh "$BUILD" >/dev/null
bash scripts/install_deps.sh etcd-server >/dev/null  # act four's cluster
BIN=$BUILD/bin
CONFIG=deploy/config/example.textproto
ADMIN_TOKEN=admin-dev-token   # from $CONFIG

work=$(mktemp -d)
daemon_pid=""
cluster_pids=()
cleanup() {
  for pid in "${cluster_pids[@]}" $daemon_pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

"$BIN/kvwardend" --config="$CONFIG" --listen=127.0.0.1:0 --ready-file="$work/ready" \
  --attach-socket="$work/attach.sock" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 1 500); do
  [ -f "$work/ready" ] && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log"; exit 1; }
  sleep 0.02
done
TARGET=$(cat "$work/ready")
ctl() { "$BIN/kvwctl" --target="$TARGET" --token="$ADMIN_TOKEN" "$@"; }
echo "== kvwardend pid $daemon_pid serving on $TARGET ($CONFIG)"
ctl health

# Two tenants, two worker processes each. alpha (128 MiB quota) grows 6 sequences of
# 512 tokens per worker; beta (512 pages = 8 MiB) asks for far more than its quota and
# is refused with RESOURCE_EXHAUSTED, without disturbing alpha.
declare -A token=([alpha]=alpha-dev-token [beta]=beta-dev-token)
declare -A nseq=([alpha]=6 [beta]=3)
pids=()
for tenant in alpha beta; do
  for i in 0 1; do
    "$BIN/kvw_demo_worker" --target="$TARGET" --token="${token[$tenant]}" --name="$tenant-$i" \
      --sequences="${nseq[$tenant]}" --tokens=512 --chunk=64 --hold-file="$work/release" \
      >"$work/$tenant-$i.out" 2>"$work/$tenant-$i.err" &
    pids+=($!)
  done
done
# Wait until every worker has done its work (summary line) and holds its sequences.
for f in alpha-0 alpha-1 beta-0 beta-1; do
  until grep -q '^summary' "$work/$f.out" 2>/dev/null; do
    if ! kill -0 "${pids[0]}" 2>/dev/null && [ -s "$work/$f.err" ]; then cat "$work/$f.err"; exit 1; fi
    sleep 0.05
  done
done

echo
echo "== quota refusals (one tenant hits its quota; the daemon names tenant, quota and usage)"
grep -h 'refused' "$work"/*.out | head -2
echo
echo "== workload summary"
awk '/^summary/ {
  for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  printf "%-8s ops=%-5d %8.0f ops/s  written %7.1f MiB  read %7.1f MiB  verified %6d tokens x layers  mismatches %d  refusals %d  held %d seqs\n",
    v["worker"], v["ops"], v["ops"] / v["seconds"], v["bytes_written"] / 1048576, v["bytes_read"] / 1048576,
    v["verified_tokens"], v["mismatches"], v["refusals"], v["sequences_held"]
  ops += v["ops"]; w += v["bytes_written"]; r += v["bytes_read"]; bad += v["mismatches"]
  if (v["seconds"] > secs) secs = v["seconds"]
} END {
  printf "TOTAL    ops=%d in %.2fs = %.0f ops/s, %.1f MiB written, %.1f MiB read, byte mismatches: %d\n",
    ops, secs, ops / secs, w / 1048576, r / 1048576, bad
  if (bad > 0) exit 3
}' "$work"/alpha-0.out "$work"/alpha-1.out "$work"/beta-0.out "$work"/beta-1.out

echo
echo "== kvwctl tenants (pages used per tenant while the workers hold their sequences)"
ctl tenants
echo
echo "== kvwctl pools"
ctl pools
echo
echo "== kvwctl seqs --tenant beta"
ctl seqs --tenant beta
ctl --json seqs --tenant alpha >"$work/alpha-seqs.json"
first=$(grep -o '"sequence_id": [0-9]*' "$work/alpha-seqs.json" | head -1 | grep -o '[0-9]*$')
echo
echo "== kvwctl seq show $first (first 4 layers)"
ctl seq show "$first" >"$work/show.txt"
head -10 "$work/show.txt"

touch "$work/release"
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
echo
echo "== after the workers released everything"
ctl tenants

# Act two: the same decode workload (256-token prompt, 1024 decode steps) under three
# retention policies side by side; scissorhands and streaming keep 128 slots per
# (layer, head). Scissorhands is fed attention statistics over StreamStats.
echo
echo "== act two: full vs scissorhands vs streaming (tenant alpha, 256 + 1024 tokens, budget 128)"
dpids=()
for policy in full scissorhands streaming; do
  "$BIN/kvw_demo_worker" --target="$TARGET" --token="${token[alpha]}" --name="decode-$policy" \
    --policy="$policy" --budget=128 --tokens=256 --decode-steps=1024 \
    >"$work/decode-$policy.out" 2>"$work/decode-$policy.err" &
  dpids+=($!)
done
for p in "${dpids[@]}"; do wait "$p" || { status=1; cat "$work"/decode-*.err; }; done
awk '/^decode/ {
  for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  printf "%-13s tokens %5d  memory held %8.1f MiB (%4d pages, peak %4d)  evictions %6d (%7.0f/s)  %5.0f steps/s  kept bytes verified %d, mismatches %d\n",
    v["policy"], v["tokens"], v["bytes_end"] / 1048576, v["pages_end"], v["pages_peak"], v["evicted"],
    v["evictions_per_s"], v["steps_per_s"], v["checked"], v["mismatches"]
}' "$work"/decode-full.out "$work"/decode-scissorhands.out "$work"/decode-streaming.out

# Act three: a prefill worker writes a 2048-token sequence (8 layers, 1024 pages, 16 MiB)
# with UCX RMA puts; a decode worker of the same tenant attaches the pool read-only,
# checks every page in place, then gets the same pages by RMA. While the decode worker
# holds its mapping, kvwctl shows the transfer lease and the attached client.
echo
echo "== act three: prefill -> decode hand-off over the data plane (UCX shm + same-host attach)"
"$BIN/kvw_handoff_worker" --target="$TARGET" --token="${token[alpha]}" --role=prefill --tokens=2048 \
  --hold-file="$work/prefill-done" >"$work/prefill.out" 2>"$work/prefill.err" &
prefill_pid=$!
until grep -q '^handoff_seq=' "$work/prefill.out" 2>/dev/null; do
  kill -0 "$prefill_pid" 2>/dev/null || { cat "$work/prefill.err"; exit 1; }
  sleep 0.05
done
handoff_seq=$(sed -n 's/^handoff_seq=\([0-9]*\).*/\1/p' "$work/prefill.out")
"$BIN/kvw_handoff_worker" --target="$TARGET" --token="${token[alpha]}" --role=decode --seq="$handoff_seq" \
  --tokens=2048 --hold-file="$work/decode-done" >"$work/decode.out" 2>"$work/decode.err" &
decode_pid=$!
until grep -q '^handoff ' "$work/decode.out" 2>/dev/null; do
  kill -0 "$decode_pid" 2>/dev/null || { cat "$work/decode.err"; exit 1; }
  sleep 0.05
done
cat "$work/prefill.out" "$work/decode.out"
echo "-- kvwctl transfers (the decode worker's mapping pins the pages) and kvwctl attached"
ctl transfers
ctl attached
touch "$work/decode-done" "$work/prefill-done"
wait "$decode_pid" || status=1
wait "$prefill_pid" || status=1

# Act four: cluster mode. A real etcd and two more daemons, node-a and node-b, sharing a
# peer token. The prefill worker writes on node-a, names the sequence "demo-request-1" and
# moves it to node-b (every page checked against its CRC-32C); the decode worker, told
# only the name, finds it on node-b and checks every byte there.
echo
echo "== act four: cluster mode (etcd): prefill on node-a, hand-off by handle, decode on node-b"
read -r etcd_client etcd_peer < <(/usr/bin/python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$etcd_client" \
  --advertise-client-urls "http://127.0.0.1:$etcd_client" --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "default=http://127.0.0.1:$etcd_peer" >"$work/etcd.log" 2>&1 &
cluster_pids+=($!)
CLUSTER="etcd://127.0.0.1:$etcd_client"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/peer-token"
declare -A node_target
for node in node-a node-b; do
  "$BIN/kvwardend" --config="$CONFIG" --listen=127.0.0.1:0 --ready-file="$work/$node.ready" \
    --attach-socket="$work/$node.sock" --cluster="$CLUSTER" --node="$node" \
    --peer-token-file="$work/peer-token" 2>"$work/$node.log" &
  cluster_pids+=($!)
  for _ in $(seq 1 500); do
    [ -s "$work/$node.ready" ] && break
    sleep 0.02
  done
  node_target[$node]=$(cat "$work/$node.ready")
done
"$BIN/kvw_handoff_worker" --target="${node_target[node-a]}" --token="${token[alpha]}" --role=prefill \
  --tokens=2048 --handle=demo-request-1 --migrate-to=node-b --hold-file="$work/cluster-done" \
  >"$work/cluster-prefill.out" 2>"$work/cluster-prefill.err" &
cluster_prefill=$!
until grep -q '^migrated ' "$work/cluster-prefill.out" 2>/dev/null; do
  kill -0 "$cluster_prefill" 2>/dev/null || { cat "$work/cluster-prefill.err"; exit 1; }
  sleep 0.05
done
"$BIN/kvw_handoff_worker" --target="${node_target[node-a]}" --token="${token[alpha]}" --role=decode \
  --tokens=2048 --handle=demo-request-1 >"$work/cluster-decode.out" 2>"$work/cluster-decode.err" || {
  cat "$work/cluster-decode.err"; status=1; }
cat "$work/cluster-prefill.out" "$work/cluster-decode.out"
echo "-- kvwctl --cluster=$CLUSTER cluster"
"$BIN/kvwctl" --cluster="$CLUSTER" cluster
# A fleet-wide tenant, written once in etcd, served by both nodes within a second.
printf 'gamma-demo-token-%s\n' "$RANDOM$RANDOM" >"$work/gamma.token"
"$BIN/kvwctl" --cluster="$CLUSTER" tenants set gamma --token-file "$work/gamma.token" --quota-pages 4096
sleep 0.5
echo "-- kvwctl --cluster=$CLUSTER tenants (every node's view, summed)"
"$BIN/kvwctl" --cluster="$CLUSTER" --token="$ADMIN_TOKEN" tenants
touch "$work/cluster-done"
wait "$cluster_prefill" || status=1

echo
echo "== stopping kvwardend (pid $daemon_pid)"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || true
daemon_pid=""
exit $status
