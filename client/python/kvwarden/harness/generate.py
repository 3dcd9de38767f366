"""kvw-generate: a llama2.c model decoding with its KV cache in kvwardend.

    python3 -m kvwarden.harness.generate --model stories260K.bin --tokenizer tok512.bin \\
        --target 127.0.0.1:50051 --token TENANT --policy scissorhands --budget 64 --steps 200

--in-memory runs the plain model (no daemon). Prefill/decode hand-off between processes:
--role prefill prints "handoff sequence=ID position=N next=TOKEN" and keeps the sequence
until its stdin closes; --role decode --from-sequence ID --position N --next TOKEN takes it
over (fork to its own lease, read the kept K/V) and goes on generating.
"""

import argparse
import os
import sys
import time
from typing import List, Optional

import torch

from kvwarden.harness.cache import InMemoryCache, KVCache, feeds_token_by_token
from kvwarden.harness.llama import Llama, Tokenizer, sample

def default_model_dir() -> str:
    """$KVW_MODEL_DIR, else shared/models/stories260k beside the checkout (or any folder
    above it), else that path under the current directory (for the message)."""
    if os.environ.get("KVW_MODEL_DIR"):
        return os.environ["KVW_MODEL_DIR"]
    here = os.path.dirname(os.path.abspath(__file__))
    while True:
        for candidate in (os.path.join(here, "shared", "models", "stories260k"),
                          os.path.join(here, "..", "shared", "models", "stories260k")):
            if os.path.isdir(candidate):
                return os.path.normpath(candidate)
        parent = os.path.dirname(here)
        if parent == here:
            return os.path.join("shared", "models", "stories260k")
        here = parent


DEFAULT_MODEL_DIR = default_model_dir()


def run_tokens(model: Llama, cache: KVCache, tokens: List[int], one_by_one: bool) -> torch.Tensor:
    """Feeds `tokens` through the model and cache; logits [len(tokens), vocab]."""
    if not one_by_one:
        positions = cache.begin(len(tokens))
        logits = model.forward(tokens, positions, cache)
        cache.end()
        return logits
    out = []
    for t in tokens:
        positions = cache.begin(1)
        out.append(model.forward([t], positions, cache)[-1])
        cache.end()
    return torch.stack(out)


def decode(model: Llama, cache: KVCache, first: int, steps: int, temperature: float = 0.0,
           seed: int = 0, stop_at_eos: bool = True) -> List[int]:
    """Generates up to `steps` tokens after `first` (already chosen, not yet in the cache)."""
    gen = torch.Generator().manual_seed(seed)
    out, token = [], first
    for _ in range(steps):
        out.append(token)
        if stop_at_eos and token == Tokenizer.EOS:
            break
        positions = cache.begin(1)
        token = sample(model.forward([token], positions, cache)[-1], temperature, gen)
        cache.end()
    return out


def policy_from_args(args):
    from kvwarden.types import Policy
    if args.policy == "full":
        return Policy.full()
    if args.policy == "streaming":
        return Policy.streaming(args.budget, args.sinks)
    if args.policy == "scissorhands":
        return Policy.scissorhands(args.budget, window=args.window, recent=args.recent, drop=args.drop)
    if args.policy == "h2o":
        return Policy.h2o(args.budget, recent=args.recent, drop=args.drop)
    return Policy.windowkv(args.budget, alpha=args.alpha, omega=args.omega)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="kvw-generate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default=os.path.join(DEFAULT_MODEL_DIR, "stories260K.bin"),
                    help="llama2.c checkpoint ($KVW_MODEL_DIR, else shared/models/stories260k beside the checkout)")
    ap.add_argument("--tokenizer", default=os.path.join(DEFAULT_MODEL_DIR, "tok512.bin"),
                    help="llama2.c tokenizer of the checkpoint")
    ap.add_argument("--prompt", default="", help="text to start from (empty: the BOS token alone)")
    ap.add_argument("--steps", type=int, default=128, help="tokens to generate")
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (temperature > 0)")
    ap.add_argument("--in-memory", action="store_true", help="the plain model: no daemon")
    ap.add_argument("--target", default="127.0.0.1:50051", help="kvwardend's gRPC address")
    ap.add_argument("--token", default=os.environ.get("KVW_TOKEN", ""),
                    help="tenant token (default: $KVW_TOKEN; deploy/config/stories260k.textproto has "
                         "model-dev-token)")
    ap.add_argument("--pool", default="main", help="the daemon's pool (layout 5 x 4 x 8 for stories260K)")
    ap.add_argument("--policy", choices=["full", "streaming", "scissorhands", "h2o", "windowkv"], default="full",
                    help="retention policy of the sequence")
    ap.add_argument("--budget", type=int, default=64, help="slots per (layer, head); WindowKV's mean budget")
    ap.add_argument("--sinks", type=int, default=4, help="streaming: oldest tokens kept")
    ap.add_argument("--window", type=int, default=0, help="scissorhands w (0: the daemon's default)")
    ap.add_argument("--recent", type=int, default=0, help="scissorhands/h2o r (0: the daemon's default)")
    ap.add_argument("--drop", type=int, default=0, help="scissorhands/h2o m (0: B/2)")
    ap.add_argument("--alpha", type=int, default=0, help="windowkv observation window (0: the daemon's default)")
    ap.add_argument("--omega", type=int, default=None, help="windowkv window size (unset: the daemon's default)")
    ap.add_argument("--kv-source", choices=["mirror", "grpc", "attach"], default="mirror",
                    help="where attention reads kept K/V: the worker's copy, ReadKV, or the attached pages")
    ap.add_argument("--role", choices=["both", "prefill", "decode"], default="both",
                    help="prefill prints a handoff line and keeps the sequence; decode continues one")
    ap.add_argument("--from-sequence", type=int, default=0, help="decode: the prefill's sequence id")
    ap.add_argument("--position", type=int, default=0, help="decode: the prefill's next position")
    ap.add_argument("--next", type=int, default=0, help="decode: the prefill's next token")
    args = ap.parse_args(argv)

    for path in (args.model, args.tokenizer):
        if not os.path.isfile(path):
            print(f"kvw-generate: {path}: no such file (give --model/--tokenizer or set KVW_MODEL_DIR)",
                  file=sys.stderr)
            return 2
    model = Llama.load(args.model)
    tok = Tokenizer(args.tokenizer, model.config.vocab_size)
    c = model.config
    prompt = tok.encode(args.prompt)
    if len(prompt) + args.steps > c.seq_len:
        print(f"kvw-generate: prompt ({len(prompt)} tokens) + steps ({args.steps}) exceed the model's "
              f"context {c.seq_len}", file=sys.stderr)
        return 2

    if args.in_memory:
        cache = InMemoryCache(c.n_layers, c.n_kv_heads, c.head_dim, c.group)
        t0 = time.perf_counter()
        first = sample(run_tokens(model, cache, prompt, False)[-1], args.temperature,
                       torch.Generator().manual_seed(args.seed))
        out = decode(model, cache, first, args.steps, args.temperature, args.seed)
        print(tok.decode(prompt + out))
        print(f"# in-memory: {len(out)} tokens in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
        return 0

    from kvwarden.client import Client
    from kvwarden.harness.daemon_cache import KvwardenCache
    from kvwarden.errors import KvwardenError
    try:
        with Client(args.target, args.token) as client:
            lease = client.register_worker(f"kvw-generate:{os.getpid()}", args.role)
            attached = client.attach(lease, args.pool) if args.kv_source == "attach" else None
            policy = policy_from_args(args)
            t0 = time.perf_counter()
            if args.role == "decode":
                cache = KvwardenCache.resume(client, lease, c, args.from_sequence, policy, args.kv_source, attached)
                if cache.next_position != args.position:
                    print(f"kvw-generate: sequence {args.from_sequence} holds positions up to "
                          f"{cache.next_position}, not {args.position}", file=sys.stderr)
                    return 3
                print(f"resumed sequence={cache.seq.id} from={args.from_sequence}", flush=True)
                out = decode(model, cache, args.next, args.steps, args.temperature, args.seed)
                print(tok.decode(prompt + out) if args.prompt else tok.decode(out))
            else:
                cache = KvwardenCache(client, lease, c, policy, args.pool, kv_source=args.kv_source,
                                      attached=attached)
                logits = run_tokens(model, cache, prompt, feeds_token_by_token(cache.kind))
                first = sample(logits[-1], args.temperature, torch.Generator().manual_seed(args.seed))
                if args.role == "prefill":
                    cache.close(release=False)
                    print(f"handoff sequence={cache.seq.id} position={cache.next_position} next={first}",
                          flush=True)
                    sys.stdin.read()  # the decode worker has forked it once stdin closes
                    client.release_lease(lease)
                    return 0
                out = decode(model, cache, first, args.steps, args.temperature, args.seed)
                print(tok.decode(prompt + out))
            dt = time.perf_counter() - t0
            print(f"# kvwarden: policy={cache.kind} {len(out)} tokens in {dt:.2f} s, peak slots "
                  f"{cache.peak_slots}, {cache.round_trips} blocking round trips", file=sys.stderr)
            cache.close()
            client.release_lease(lease)
    except KvwardenError as e:
        print(f"kvw-generate: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
