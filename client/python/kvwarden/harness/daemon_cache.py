"""KvwardenCache: a model's KV cache kept by kvwardend.

Each step reserves the new tokens' slots, writes their K/V to the daemon, sends the
statistics the sequence's policy needs on the stats stream and follows the daemon's
answer: the positions it evicted per (layer, head) and the new epoch. The cache never
decides retention itself and never keeps an evicted token.

Where the attention reads K/V from (`kv_source`):
- "mirror" (default): the worker's write-through copy of exactly the daemon's kept
  tokens (same dtype rounding, same positions, dropped as the daemon drops them) - no
  read per step; the daemon's copy serves hand-off, other readers and admin.
- "grpc": every step reads the kept K/V with ReadKV at the sequence's epoch.
- "attach": every step maps the kept slots of the tenant's chunks (same host, CPU pool)
  under a transfer lease and reads them in place.

Round trips per decode step (blocking): Scissorhands one (the stats exchange; the
reservation and the K/V write are issued without waiting), streaming one (the
reservation, which says what it evicted), full and WindowKV none (both pipelined).
"grpc" and "attach" add the per-step read.
"""

from typing import Optional

import grpc
import numpy as np
import torch

from kvwarden.harness.cache import KVCache
from kvwarden.errors import KvwardenError
from kvwarden.types import HeadStats, Lease, Policy, Sequence


def _policy_params(policy: Policy, n_layers: int):
    """(kind, threshold_scale, windowkv alpha, windowkv gamma, recent) as the daemon takes
    them: zero fields read their default from policy.proto."""
    kind = policy.proto.WhichOneof("policy") or "full"
    value = Policy.value_or_default
    if kind == "scissorhands":
        s = policy.proto.scissorhands
        return kind, value(s, "threshold_scale"), 0, 1, value(s, "recent")
    if kind == "h2o":
        return kind, 1.0, 0, 1, value(policy.proto.h2o, "recent")
    if kind == "windowkv":
        w = policy.proto.windowkv
        return kind, 1.0, value(w, "alpha"), w.gamma or min(value(w, "gamma"), n_layers), 0
    return kind, 1.0, 0, 1, 0


class KvwardenCache(KVCache):
    def __init__(self, client, lease: Lease, config, policy: Optional[Policy] = None, pool: str = "main",
                 max_tokens: Optional[int] = None, kv_source: str = "mirror", attached=None,
                 sequence: Optional[Sequence] = None):
        """A new sequence of `pool` for a model of `config` (kvwarden.harness.llama.LlamaConfig),
        or, with `sequence`, one whose tokens are already in the daemon (resume)."""
        policy = policy or Policy.full()
        self.kind, threshold, alpha, gamma, self._recent = _policy_params(policy, config.n_layers)
        super().__init__(config.n_layers, config.n_kv_heads, config.head_dim, config.group,
                         threshold_scale=threshold, window_alpha=alpha, window_layers=range(0, config.n_layers, gamma))
        if kv_source not in ("mirror", "grpc", "attach"):
            raise ValueError(f"kv_source must be mirror, grpc or attach, not {kv_source!r}")
        if kv_source == "attach" and attached is None:
            raise ValueError("kv_source='attach' needs an AttachedPool (client.attach(lease, pool))")
        self.client, self.lease, self.kv_source, self.attached = client, lease, kv_source, attached
        self.seq = sequence or client.create_sequence(lease, pool, max_tokens or config.seq_len, policy)
        lay = self.seq.layout
        if (lay.num_layers, lay.num_kv_heads, lay.head_dim) != (config.n_layers, config.n_kv_heads, config.head_dim):
            raise ValueError(f"pool '{self.seq.pool}' holds {lay.num_layers} layers x {lay.num_kv_heads} KV heads x "
                             f"{lay.head_dim}, the model needs {config.n_layers} x {config.n_kv_heads} x {config.head_dim}")
        if lay.dtype == "bf16":
            raise ValueError("bf16 pools: NumPy has no bfloat16; use an fp16 or fp32 pool from Python")
        self._torch_dtype = torch.float16 if lay.dtype == "fp16" else torch.float32
        self.epoch = self.seq.epoch
        self._pending_write = None
        self._pending_reserve = None
        self._stats = None
        self.round_trips = 0     # blocking waits on the daemon, for the figures
        self.window_selected = False
        if sequence is not None:
            self._load_all()

    # -- resume (hand-off) ---------------------------------------------------------------
    @staticmethod
    def resume(client, lease: Lease, config, sequence_id: int, policy: Optional[Policy] = None,
               kv_source: str = "mirror", attached=None) -> "KvwardenCache":
        """Takes over a sequence another worker of this tenant prefilled: forks it to
        `lease` (the pages are shared or copied by the daemon) and reads its kept tokens."""
        info = client.describe_sequence(Sequence(sequence_id, None, ""))
        from kvwarden.types import Layout
        parent = Sequence(sequence_id, Layout.from_proto(info.layout), info.pool, info.epoch)
        child = client.fork_sequence(parent, lease)
        return KvwardenCache(client, lease, config, policy, kv_source=kv_source, attached=attached,
                             sequence=Sequence(child.id, parent.layout, parent.pool, info.epoch))

    def _load_all(self):
        """Positions and K/V of every kept token, from ReadKV."""
        layers = self.client.read_kv(self.seq)
        for lkv in layers:
            for h in range(self.n_kv_heads):
                self.k[lkv.layer][h] = torch.from_numpy(lkv.k[h].astype(np.float32))
                self.v[lkv.layer][h] = torch.from_numpy(lkv.v[h].astype(np.float32))
                self.pos[lkv.layer][h] = lkv.positions[h].astype(np.int64)
            self.epoch = lkv.epoch
        self.next_position = int(max((p[-1] + 1 for row in self.pos for p in row if len(p)), default=0))
        self.window_selected = self.kind == "windowkv"

    # -- the step protocol ---------------------------------------------------------------
    def _wait_write(self):
        if self._pending_write is not None:
            w, self._pending_write = self._pending_write, None
            w.wait()

    def make_room(self, num_tokens):
        if self.kind != "streaming" and self.kv_source == "mirror":
            # Nothing to follow before the attention: the answer is awaited at the write.
            self._pending_reserve = self.client.reserve_slots_async(self.seq, num_tokens)
            return
        self.round_trips += 1
        self._reserved(self.client.reserve_slots(self.seq, num_tokens))

    def _reserved(self, r):
        if r.first_position != self.next_position:
            raise KvwardenError(grpc.StatusCode.DATA_LOSS, f"sequence {self.seq.id}: the daemon reserved position "
                                f"{r.first_position}, this worker expected {self.next_position}")
        for h in r.evicted:
            self._follow(h)
        self.epoch = r.epoch
        if self.kv_source != "mirror":
            self._wait_write()
            self._read_kept(r.first_position)

    def _read_kept(self, token_end: int):
        """Replaces the copy of the kept tokens [0, token_end) with the daemon's bytes."""
        if token_end == 0:
            return
        if self.kv_source == "grpc":
            for lkv in self.client.read_kv(self.seq, token_end=token_end, epoch=self.epoch):
                for h in range(self.n_kv_heads):
                    if not np.array_equal(lkv.positions[h], self.pos[lkv.layer][h]):
                        raise KvwardenError(grpc.StatusCode.DATA_LOSS,
                                            f"layer {lkv.layer} head {h}: the daemon holds other positions")
                    self.k[lkv.layer][h] = torch.from_numpy(lkv.k[h].astype(np.float32))
                    self.v[lkv.layer][h] = torch.from_numpy(lkv.v[h].astype(np.float32))
            self.round_trips += 1
            return
        held = self.max_slots()
        with self.attached.map(self.seq, 0, held) as view:
            if view.epoch != self.epoch:
                raise KvwardenError(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"sequence {self.seq.id} moved to epoch {view.epoch} under the read")
            pt = self.seq.layout.page_tokens
            for layer in range(self.n_layers):
                pages = [view.page(layer, i) for i in range((held + pt - 1) // pt)]
                k = np.concatenate([p[0] for p in pages], axis=1)
                v = np.concatenate([p[1] for p in pages], axis=1)
                for h in range(self.n_kv_heads):
                    n = self.slots(layer, h)
                    self.k[layer][h] = torch.from_numpy(k[h, :n].astype(np.float32))
                    self.v[layer][h] = torch.from_numpy(v[h, :n].astype(np.float32))
        self.round_trips += 2  # BeginTransfer, EndTransfer

    def attend(self, layer, q, k, v):
        # The pool's dtype: what the daemon will hold is what this step attends to.
        k = k.to(self._torch_dtype).to(torch.float32)
        v = v.to(self._torch_dtype).to(torch.float32)
        return super().attend(layer, q, k, v)

    def apply_retention(self):
        if self._pending_reserve is not None:
            pending, self._pending_reserve = self._pending_reserve, None
            resp = pending.wait()
            if resp.first_position != self.step_positions[0] or resp.evicted:
                raise KvwardenError(grpc.StatusCode.DATA_LOSS, f"sequence {self.seq.id}: reservation at position "
                                    f"{resp.first_position} (expected {self.step_positions[0]}) or with evictions")
            self.epoch = resp.epoch
        T = len(self.step_positions)
        np_dtype = self.seq.layout.np_dtype
        k = np.stack([np.stack([self.k[l][h][-T:].numpy() for h in range(self.n_kv_heads)])
                      for l in range(self.n_layers)]).astype(np_dtype)
        v = np.stack([np.stack([self.v[l][h][-T:].numpy() for h in range(self.n_kv_heads)])
                      for l in range(self.n_layers)]).astype(np_dtype)
        self._wait_write()  # at most one write in flight
        self._pending_write = self.client.write_kv_async(self.seq, k, v, self.step_positions[0])
        if self.kind == "scissorhands" and self.stats.listed:
            if self._recent < 1:
                self._wait_write()  # the new token itself may go: its bytes must be in first
            step = [HeadStats(l, h, n, listed) for (l, h), (n, listed) in sorted(self.stats.listed.items())]
            self._apply(self._stream().send_steps(self.seq, self.epoch, [step]))
        elif self.kind == "h2o" and self.stats.dense:
            if self._recent < 1:
                self._wait_write()
            step = [HeadStats(l, h, len(row), dense=row) for (l, h), row in sorted(self.stats.dense.items())]
            self._apply(self._stream().send_steps(self.seq, self.epoch, [step]))
        elif self.kind == "windowkv" and self.stats.window_sums and not self.window_selected:
            self._wait_write()  # selection moves the prompt's bytes: they must all be in
            scores = sorted(self.stats.window_sums.items())
            self._apply(self._stream().send_window_scores(self.seq, self.epoch, scores))
            self.window_selected = True

    def _stream(self):
        if self._stats is None:
            self._stats = self.client.stats_stream()
        return self._stats

    def _apply(self, update):
        self.round_trips += 1
        for h in update.heads:
            self._follow(h)
        self.epoch = update.epoch

    def _follow(self, h):
        gone = self.drop_positions(h.layer, h.head, h.evicted_positions)
        if gone != len(h.evicted_positions) or self.slots(h.layer, h.head) != h.live_slots:
            raise KvwardenError(grpc.StatusCode.DATA_LOSS,
                                f"layer {h.layer} head {h.head}: the daemon evicted {len(h.evicted_positions)} "
                                f"positions, {gone} of them were held here")

    def flush(self):
        """Waits until the daemon holds every K/V this cache wrote."""
        self._wait_write()

    def close(self, release: bool = True):
        """Waits for the last write, ends the stats stream and (by default) releases the
        sequence; release=False leaves it to a decode worker (hand-off)."""
        try:
            self._wait_write()
        finally:
            if self._stats is not None:
                self._stats.close()
                self._stats = None
            if release:
                self.client.release_sequence(self.seq)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
