"""kvw-quality: what each retention policy costs a real model, measured through kvwardend.

    python3 -m kvwarden.harness.quality --kvwardend build/bin/kvwardend [--out quality.png]
    (scripts/kvw-quality.sh does the same from a checkout)

For every text and every budget (100/50/30/20/12% of the context), the model reads the
text through a real daemon under full, streaming, Scissorhands, H2O and WindowKV, and each
policy's next-token distributions over the second half are compared with the full
cache's: perplexity and its ratio to full, top-1 agreement, mean KL(full || policy), and
the mean occupancy (live slots per layer and head over the half, as a share of the
context). Policies are compared at equal mean occupancy: Scissorhands and H2O, which
drop half their budget at a time, get 4/3 of streaming's budget, and every policy with
sinks gets the same 4. Streaming, Scissorhands and H2O read the whole text token by token
under a budget of that share of it;
WindowKV prefills the first half, selects windows down to that share of it, then decodes
the rest. Also: the persistence ratio per layer (full cache, decode steps) and decode
tokens/s through kvwardend vs in memory.

Texts: stories the model writes at temperature 1 (fixed seeds, printed) and the opening
of Genesis from Debian's bible-kjv (the King James Version, public domain).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from kvwarden.harness.cache import InMemoryCache, feeds_token_by_token
from kvwarden.harness.generate import DEFAULT_MODEL_DIR, decode, run_tokens
from kvwarden.harness.llama import Llama, Tokenizer
from kvwarden.harness.reference import persistence_ratio
from kvwarden.spawn import LocalDaemon

BUDGETS = (100, 50, 30, 20, 12)
POLICIES = ("full", "streaming", "scissorhands", "h2o", "windowkv")
# Scissorhands and H2O drop m = B/2 slots at a time, so a head holds between B/2 and B
# slots, about 3/4 B on average; streaming holds B once full. Their budgets are scaled by
# 4/3 so that every policy of a row holds about the same share of the context on average
# (the occupancy column says what each really held).
EQUAL_OCCUPANCY = {"scissorhands": 4 / 3, "h2o": 4 / 3}
SINKS = 4  # every policy that has sinks gets streaming's
PAPER_PERSISTENCE = 0.95

DAEMON_CONFIG = """
admin_token: "quality-admin"
pools {{
  name: "main"
  layout {{ num_layers: {layers} num_kv_heads: {kv_heads} head_dim: {head_dim} dtype: DTYPE_FP32 page_tokens: 16 }}
  capacity_pages: {pages}
  chunk_bytes: 1048576
}}
tenants {{ name: "quality" token: "quality-token" quota_pages: {pages} }}
data_plane {{ disable_ucx: true }}
"""


def genesis(tokenizer: Tokenizer, tokens: int) -> Optional[List[int]]:
    """The opening of Genesis (KJV) from Debian's bible-kjv, or None without it."""
    if shutil.which("bible") is None:
        return None
    out = subprocess.run(["bible", "-f", "Genesis 1:1-31"], capture_output=True, text=True, timeout=30).stdout
    text = " ".join(line.split(" ", 1)[1] for line in out.splitlines() if " " in line)
    ids = tokenizer.encode(text)
    return ids[:tokens] if len(ids) >= tokens else None


def policy_for(name: str, budget: int):
    from kvwarden.types import Policy
    if name == "full":
        return Policy.full()
    if name == "streaming":
        return Policy.streaming(budget, SINKS)
    if name == "scissorhands":
        return Policy.scissorhands(budget, sinks=SINKS)
    if name == "h2o":
        return Policy.h2o(budget, sinks=SINKS)
    return Policy.windowkv(budget)


def read_text(model, cache, text: List[int], half: int, one_by_one: bool) -> torch.Tensor:
    """Logits predicting text[half + 1:], the text read through `cache`."""
    first = run_tokens(model, cache, text[:half], one_by_one)
    cache.reset_occupancy()  # occupancy over the measured half
    return torch.cat([first, run_tokens(model, cache, text[half:-1], True)])[half - 1:]


def compare(logits: torch.Tensor, full: torch.Tensor, targets: torch.Tensor) -> Dict[str, float]:
    logp, logq = torch.log_softmax(full, -1), torch.log_softmax(logits, -1)
    nll = -logq.gather(1, targets[:, None]).mean()
    kl = (logp.exp() * (logp - logq)).sum(-1).mean()
    return {"ppl": float(torch.exp(nll)), "top1": float((logits.argmax(-1) == full.argmax(-1)).float().mean()),
            "kl": float(kl)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="kvw-quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(DEFAULT_MODEL_DIR, "stories260K.bin"))
    ap.add_argument("--tokenizer", default=os.path.join(DEFAULT_MODEL_DIR, "tok512.bin"))
    ap.add_argument("--kvwardend", help="start this kvwardend for the run (else --target/--token)")
    ap.add_argument("--target")
    ap.add_argument("--token", default=os.environ.get("KVW_TOKEN", ""))
    ap.add_argument("--tokens", type=int, default=320, help="tokens per text (the context of the figures)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="story seeds (temperature 1)")
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="percent of the context")
    ap.add_argument("--persistence-window", type=int, default=32, help="decode steps")
    ap.add_argument("--out", default="kvw-quality.png", help="the plot (PNG); '' for none")
    ap.add_argument("--json", default="", help="also write the figures here (JSON)")
    args = ap.parse_args(argv)

    model = Llama.load(args.model)
    c = model.config
    tok = Tokenizer(args.tokenizer, c.vocab_size)
    n = min(args.tokens, c.seq_len)
    texts: List[Tuple[str, List[int]]] = []
    for seed in args.seeds:
        story = decode(model, InMemoryCache(c.n_layers, c.n_kv_heads, c.head_dim, c.group), Tokenizer.BOS, n,
                       temperature=1.0, seed=seed, stop_at_eos=False)
        texts.append((f"story seed {seed}", story))
    kjv = genesis(tok, n)
    if kjv is None:
        print("# no bible-kjv (apt-get install bible-kjv): the public-domain text is left out", file=sys.stderr)
    else:
        texts.append(("Genesis 1 (KJV)", kjv))
    print("# texts: " + ", ".join(f"{name} ({len(t)} tokens)" for name, t in texts))
    print(f"# model {args.model}: {c.n_layers} layers, {c.n_heads} heads over {c.n_kv_heads} KV heads; "
          f"{n} tokens per text, metrics over the last {n - n // 2} predictions")

    from kvwarden.client import Client
    from kvwarden.harness.daemon_cache import KvwardenCache
    workdir = tempfile.mkdtemp(prefix="kvw-quality-")
    daemon = None
    if args.kvwardend:
        pages = 64 * c.n_layers * (c.seq_len // 16 + 1)
        daemon = LocalDaemon(args.kvwardend, DAEMON_CONFIG.format(
            layers=c.n_layers, kv_heads=c.n_kv_heads, head_dim=c.head_dim, pages=pages), workdir)
    target, token = (daemon.target, "quality-token") if daemon else (args.target, args.token)
    if not target:
        print("kvw-quality: give --kvwardend or --target", file=sys.stderr)
        return 2
    rows: List[Dict] = []
    persistence: List[List[float]] = []
    speed = {"memory": [0.0, 0], "kvwarden": [0.0, 0]}
    try:
        with Client(target, token) as client:
            lease = client.register_worker(f"kvw-quality:{os.getpid()}", "both")
            for name, text in texts:
                half = n // 2
                targets = torch.tensor(text[half:], dtype=torch.int64)
                # Full in memory: the reference distributions, the persistence ratio, tokens/s.
                mem = InMemoryCache(c.n_layers, c.n_kv_heads, c.head_dim, c.group)
                heavy = []
                logits_steps = [run_tokens(model, mem, text[:half], False)]
                t0 = time.perf_counter()
                for t in text[half:-1]:
                    pos = mem.begin(1)
                    logits_steps.append(model.forward([t], pos, mem))
                    heavy.append((pos[0], dict(mem.stats.heavy_positions)))
                    mem.end()
                speed["memory"][0] += time.perf_counter() - t0
                speed["memory"][1] += len(text) - 1 - half
                full = torch.cat(logits_steps)[half - 1:]
                persistence.append(persistence_ratio(heavy, c.n_layers, args.persistence_window))
                for policy in POLICIES:
                    for pct in (args.budgets if policy != "full" else [100]):
                        cached = n if feeds_token_by_token(policy) else half
                        budget = max(int(round(cached * pct / 100 * EQUAL_OCCUPANCY.get(policy, 1.0))), 16)
                        with KvwardenCache(client, lease, c, policy_for(policy, budget), max_tokens=n) as kv:
                            t0 = time.perf_counter()
                            logits = read_text(model, kv, text, half, feeds_token_by_token(policy))
                            if policy == "full":
                                speed["kvwarden"][0] += time.perf_counter() - t0
                                speed["kvwarden"][1] += len(text) - 1 - half
                                if not torch.equal(logits, full):
                                    print(f"kvw-quality: full through kvwardend differs from in memory on {name}",
                                          file=sys.stderr)
                                    return 1
                            m = compare(logits, full, targets)
                            m.update(text=name, policy=policy, pct=pct, budget=budget,
                                     occupancy=kv.mean_occupancy() / n, round_trips=kv.round_trips / (len(text) - 1))
                            rows.append(m)
            client.release_lease(lease)
    finally:
        if daemon:
            daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print_table(rows, texts)
    per_layer = np.nanmean(np.array(persistence), axis=0)
    print("\npersistence ratio per layer (full cache, window %d steps; the paper reports > %.0f%%):"
          % (args.persistence_window, 100 * PAPER_PERSISTENCE))
    print("  " + "  ".join(f"layer {i}: {100 * r:.1f}%" for i, r in enumerate(per_layer)))
    mem_tps = speed["memory"][1] / speed["memory"][0]
    kvw_tps = speed["kvwarden"][1] / speed["kvwarden"][0]
    print(f"\ndecode tokens/s: in memory {mem_tps:.0f}, through kvwardend (full, gRPC writes pipelined) "
          f"{kvw_tps:.0f} ({kvw_tps / mem_tps:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"texts": [name for name, _ in texts], "rows": aggregate(rows, texts),
                       "persistence": [float(r) for r in per_layer], "tokens_per_s_memory": mem_tps,
                       "tokens_per_s_kvwarden": kvw_tps}, f, indent=1)
    if args.out:
        plot(rows, texts, args.out)
        print(f"plot: {args.out}")
    return 0


def aggregate(rows, texts):
    """Per (group, policy, pct): means over the texts of the group (stories, or KJV)."""
    groups = {"stories": [t for t, _ in texts if t.startswith("story")],
              "KJV": [t for t, _ in texts if not t.startswith("story")]}
    out = []
    for group, names in groups.items():
        if not names:
            continue
        full_ppl = np.mean([r["ppl"] for r in rows if r["policy"] == "full" and r["text"] in names])
        keys = sorted({(r["policy"], r["pct"]) for r in rows}, key=lambda k: (POLICIES.index(k[0]), -k[1]))
        for policy, pct in keys:
            sel = [r for r in rows if r["policy"] == policy and r["pct"] == pct and r["text"] in names]
            ppl = float(np.mean([r["ppl"] for r in sel]))
            out.append(dict(group=group, policy=policy, pct=pct, ppl=ppl, ratio=ppl / full_ppl,
                            top1=float(np.mean([r["top1"] for r in sel])), kl=float(np.mean([r["kl"] for r in sel])),
                            occupancy=float(np.mean([r["occupancy"] for r in sel])),
                            round_trips=float(np.mean([r["round_trips"] for r in sel]))))
    return out


def print_table(rows, texts):
    print("\n| text | policy | budget | occupancy | perplexity | vs full | top-1 agree | KL(full‖policy) | RT/token |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for a in aggregate(rows, texts):
        print(f"| {a['group']} | {a['policy']} | {a['pct']}% | {100 * a['occupancy']:.0f}% | {a['ppl']:.2f} | "
              f"{a['ratio']:.3f} | {100 * a['top1']:.1f}% | {max(a['kl'], 0.0):.4f} | {a['round_trips']:.2f} |")


def plot(rows, texts, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    agg = aggregate(rows, texts)
    groups = sorted({a["group"] for a in agg}, reverse=True)
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for policy in POLICIES[1:]:
            pts = sorted((a["occupancy"] * 100, a["ratio"]) for a in agg if a["group"] == group and a["policy"] == policy)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=policy)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--", label="full")
        ax.set_xlabel("mean occupancy (% of the context)")
        ax.set_ylabel("perplexity / full")
        ax.set_title(f"stories260K through kvwardend: {group}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
