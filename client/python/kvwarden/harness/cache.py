"""KV caches a model's attention runs through (kvwarden.harness.llama.Llama.forward).

A cache holds, per (layer, KV head), the kept K and V [n, head_dim] and the original
positions of those n tokens, oldest first. Heads may hold different tokens once a
per-head policy (Scissorhands) has evicted. One step is

    positions = cache.begin(num_tokens)   # room for the new tokens (may evict: streaming)
    logits = model.forward(tokens, positions, cache)   # cache.attend per layer
    cache.end()                            # statistics out, retention applied

Subclasses decide retention: InMemoryCache keeps everything (the plain model),
kvwarden.harness.reference.ReferenceCache runs the policies in process, and
kvwarden.harness.daemon_cache.KvwardenCache follows kvwardend.

Statistics (what the daemon's policies take), per (layer, KV head):
- a decode step (one new token): the slots whose attention is at or above
  threshold_scale / n, n = the slots attended (the new token included), and the whole
  row (H2O sums it);
- the end of a one-chunk prefill: WindowKV's observation sums, [KV head][candidate].
With grouped-query attention a KV head serves `group` query heads; its attention row is
the **mean of its query heads' rows** (still a distribution over the same slots, so the
1/n threshold keeps its meaning, and no head's heavy token is lost to another's).
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch


@dataclass
class StepStats:
    """What one step's attention produced for the policies."""

    # Decode step: (layer, head) -> (attended, listed slot indices).
    listed: Dict[Tuple[int, int], Tuple[int, np.ndarray]] = field(default_factory=dict)
    # Decode step: (layer, head) -> positions of the listed slots (for persistence).
    heavy_positions: Dict[Tuple[int, int], np.ndarray] = field(default_factory=dict)
    # Decode step: (layer, head) -> the whole attention row over the attended slots (H2O).
    dense: Dict[Tuple[int, int], np.ndarray] = field(default_factory=dict)
    # End of prefill: layer -> sums [heads, candidates].
    window_sums: Dict[int, np.ndarray] = field(default_factory=dict)


class KVCache:
    """Storage and attention shared by every cache. `window_alpha` > 0 makes attend
    collect WindowKV observation sums in `window_layers` when a chunk is processed;
    decode steps (one token) always collect the listed slots at `threshold_scale`."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, group: int,
                 threshold_scale: float = 1.0, window_alpha: int = 0, window_layers=()):
        self.n_layers, self.n_kv_heads, self.head_dim, self.group = n_layers, n_kv_heads, head_dim, group
        self.threshold_scale = threshold_scale
        self.window_alpha, self.window_layers = window_alpha, set(window_layers)
        self.k = [[torch.zeros(0, head_dim) for _ in range(n_kv_heads)] for _ in range(n_layers)]
        self.v = [[torch.zeros(0, head_dim) for _ in range(n_kv_heads)] for _ in range(n_layers)]
        self.pos = [[np.zeros(0, dtype=np.int64) for _ in range(n_kv_heads)] for _ in range(n_layers)]
        self.next_position = 0
        self.step_positions: List[int] = []
        self.stats = StepStats()
        self.peak_slots = 0
        self._slot_steps = 0   # sum over steps of the live slots (occupancy)
        self._steps = 0

    # -- the step protocol ------------------------------------------------------------
    def begin(self, num_tokens: int) -> List[int]:
        """Room for `num_tokens` new tokens; returns their positions."""
        self.make_room(num_tokens)
        self.step_positions = list(range(self.next_position, self.next_position + num_tokens))
        self.next_position += num_tokens
        self.stats = StepStats()
        return self.step_positions

    def end(self):
        """The step's K/V are in; statistics go to the policy, retention is applied."""
        self.peak_slots = max(self.peak_slots, self.max_slots())
        self.apply_retention()
        self._slot_steps += self.mean_slots()
        self._steps += 1

    # Overridden by retention-applying caches.
    def make_room(self, num_tokens: int):
        pass

    def apply_retention(self):
        pass

    # -- attention ----------------------------------------------------------------------
    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Appends the step's k, v [T, kv_heads, head_dim] to every head of `layer` and
        returns the attention output [T, heads, head_dim] of q [T, heads, head_dim], causal
        among the new tokens."""
        T = q.shape[0]
        out = torch.empty_like(q)
        scale = 1.0 / math.sqrt(self.head_dim)
        new_pos = np.asarray(self.step_positions, dtype=np.int64)
        for h in range(self.n_kv_heads):
            K = torch.cat([self.k[layer][h], k[:, h]])
            V = torch.cat([self.v[layer][h], v[:, h]])
            self.k[layer][h], self.v[layer][h] = K, V
            self.pos[layer][h] = np.concatenate([self.pos[layer][h], new_pos])
            n = K.shape[0]
            Q = q[:, h * self.group:(h + 1) * self.group].transpose(0, 1)  # [G, T, hd]
            scores = (Q @ K.T) * scale                                       # [G, T, n]
            if T > 1:
                visible = torch.arange(n)[None, :] <= torch.arange(n - T, n)[:, None]
                scores = scores.masked_fill(~visible, float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            out[:, h * self.group:(h + 1) * self.group] = (probs @ V).transpose(0, 1)
            row = probs.mean(0)  # [T, n]: the KV head's row, the mean of its query heads
            if T == 1:
                listed = np.flatnonzero(row[0].numpy() >= np.float32(self.threshold_scale / n)).astype(np.uint32)
                self.stats.listed[(layer, h)] = (n, listed)
                self.stats.heavy_positions[(layer, h)] = self.pos[layer][h][listed]
                self.stats.dense[(layer, h)] = row[0].numpy().astype(np.float32)
            elif self.window_alpha and layer in self.window_layers and n > self.window_alpha:
                a = self.window_alpha
                sums = row[-a:, :n - a].sum(0).numpy().astype(np.float32)
                self.stats.window_sums.setdefault(layer, np.zeros((self.n_kv_heads, n - a), np.float32))[h] = sums
        return out

    # -- what is held ---------------------------------------------------------------------
    def slots(self, layer: int, head: int) -> int:
        return self.k[layer][head].shape[0]

    def max_slots(self) -> int:
        return max(self.slots(l, h) for l in range(self.n_layers) for h in range(self.n_kv_heads))

    def mean_slots(self) -> float:
        return float(np.mean([self.slots(l, h) for l in range(self.n_layers) for h in range(self.n_kv_heads)]))

    def reset_occupancy(self):
        self._slot_steps, self._steps = 0, 0

    def mean_occupancy(self) -> float:
        """Live slots per (layer, head), averaged over the heads and the steps."""
        return self._slot_steps / max(self._steps, 1)

    def drop_positions(self, layer: int, head: int, positions) -> int:
        """Removes the tokens at `positions` from one head; returns how many went."""
        gone = np.isin(self.pos[layer][head], np.asarray(positions, dtype=np.int64))
        if gone.any():
            keep = torch.from_numpy(~gone)
            self.k[layer][head] = self.k[layer][head][keep]
            self.v[layer][head] = self.v[layer][head][keep]
            self.pos[layer][head] = self.pos[layer][head][~gone]
        return int(gone.sum())

    def keep_slots(self, layer: int, head: int, kept) -> np.ndarray:
        """Keeps the slots `kept` (ascending) of one head; returns the dropped positions."""
        kept = np.asarray(kept, dtype=np.int64)
        dropped = np.setdiff1d(self.pos[layer][head], self.pos[layer][head][kept])
        idx = torch.from_numpy(kept)
        self.k[layer][head] = self.k[layer][head][idx]
        self.v[layer][head] = self.v[layer][head][idx]
        self.pos[layer][head] = self.pos[layer][head][kept]
        return dropped


class InMemoryCache(KVCache):
    """Keeps every token: the plain model, the baseline of every figure."""


def feeds_token_by_token(policy_kind: str) -> bool:
    """Whether a prompt goes through one token at a time: streaming, Scissorhands and H2O
    act per step (their budget binds while the prompt is read), full and WindowKV take the
    prompt in one chunk (WindowKV selects at its end)."""
    return policy_kind in ("streaming", "scissorhands", "h2o")
