"""kvw-py-bench: the Python client's byte path against a kvwardend of its own, with NumPy's
copy of the same bytes as the reference in the same run.

    python3 -m kvwarden.bench --kvwardend build/bin/kvwardend [--tokens 4096] [--repeat 3]

Prints write_kv and read_kv MB/s (gRPC), the attach read (map the slots under a transfer
lease and copy them out of the mapped chunks) and np.copy of an array of the same size,
each best of --repeat, and the ratios to np.copy.
"""

import argparse
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np

from kvwarden.client import Client
from kvwarden.spawn import LocalDaemon

LAYERS, HEADS, HEAD_DIM, PAGE_TOKENS = 4, 8, 128, 16

CONFIG = """
admin_token: "bench-admin"
pools {{
  name: "main"
  layout {{ num_layers: {layers} num_kv_heads: {heads} head_dim: {head_dim} dtype: DTYPE_FP16 page_tokens: {pt} }}
  capacity_pages: {pages}
  chunk_bytes: 4194304
}}
tenants {{ name: "bench" token: "bench-token" quota_pages: {pages} }}
data_plane {{ disable_ucx: true }}
"""


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="kvw-py-bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kvwardend", required=True)
    ap.add_argument("--tokens", type=int, default=4096, help="tokens of one sequence (4 layers x 8 heads x 128 fp16)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    tokens = max(PAGE_TOKENS, args.tokens // PAGE_TOKENS * PAGE_TOKENS)
    pages = 2 * LAYERS * tokens // PAGE_TOKENS + 64
    rng = np.random.default_rng(1)
    k = rng.standard_normal((LAYERS, HEADS, tokens, HEAD_DIM)).astype(np.float16)
    v = rng.standard_normal((LAYERS, HEADS, tokens, HEAD_DIM)).astype(np.float16)
    total = k.nbytes + v.nbytes
    with tempfile.TemporaryDirectory(prefix="kvw-py-bench-") as d, \
            LocalDaemon(args.kvwardend, CONFIG.format(layers=LAYERS, heads=HEADS, head_dim=HEAD_DIM, pt=PAGE_TOKENS,
                                                      pages=pages), d, attach=True) as daemon, \
            Client(daemon.target, "bench-token", timeout=60) as client:
        lease = client.register_worker("kvw-py-bench", "both")
        seq = client.create_sequence(lease, "main", tokens)
        client.reserve_slots(seq, tokens)
        t_write = best(lambda: client.write_kv(seq, k, v, 0), args.repeat)
        t_read = best(lambda: client.read_kv(seq), args.repeat)
        got = client.read_kv(seq)
        if not all(np.array_equal(got[l].dense()[0], k[l]) for l in range(LAYERS)):
            print("kvw-py-bench: read_kv returned other bytes than written", file=sys.stderr)
            return 1
        with client.attach(lease) as pool:
            def attach_read():
                with pool.map(seq, 0, tokens) as view:
                    out = [np.copy(view.page(l, i)[0]) for l in range(LAYERS) for i in range(tokens // PAGE_TOKENS)]
                    out += [np.copy(view.page(l, i)[1]) for l in range(LAYERS) for i in range(tokens // PAGE_TOKENS)]
                    return out

            t_attach = best(attach_read, args.repeat)
            with pool.map(seq, 0, tokens) as view:
                if not np.array_equal(view.page(1, 0)[0], k[1, :, :PAGE_TOKENS]):
                    print("kvw-py-bench: attach reads other bytes than written", file=sys.stderr)
                    return 1
        flat = np.concatenate([k.ravel(), v.ravel()])
        t_copy = best(lambda: np.copy(flat), args.repeat)
        client.release_lease(lease)
    mb = total / 1e6
    print(f"# {tokens} tokens x {LAYERS} layers x {HEADS} KV heads x {HEAD_DIM} fp16: {mb:.1f} MB of K+V; "
          f"best of {args.repeat}")
    print(f"summary: np.copy {mb / t_copy:.0f} MB/s (the reference)")
    for name, t in (("write_kv (gRPC) MB/s", t_write), ("read_kv (gRPC) MB/s", t_read),
                    ("attach read (map + copy out) MB/s", t_attach)):
        # scripts/bench.sh's table: bench|figure|value|reference|ratio|goal
        print(f"row|python|{name}|{mb / t:.0f}|np.copy {mb / t_copy:.0f}|{t_copy / t:.3f}x|-")
    return 0


if __name__ == "__main__":
    sys.exit(main())
