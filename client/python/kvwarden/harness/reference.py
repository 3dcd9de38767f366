"""The retention policies in process, written from the README's "Retention policies"
without calling the daemon: the reference that kvwardend's decisions are checked against on real attention
(tests/test_model.py), and the quality tool's cross-check.

Policies here work on original positions, the daemon on slots; the two must agree.
"""

import math
from collections import deque
from typing import Dict, List, Tuple

import numpy as np

from kvwarden.harness.cache import KVCache


def streaming_kept(n: int, budget: int, sinks: int) -> List[int]:
    """Slots a head of n keeps under streaming (budget, sinks): the sinks and the newest."""
    if n <= budget:
        return list(range(n))
    return list(range(sinks)) + list(range(n - (budget - sinks), n))


def scissorhands_evict(low_counts: np.ndarray, budget: int, recent: int, drop: int, sinks: int) -> List[int]:
    """Slots to evict from a head whose slots (oldest first) have `low_counts`."""
    n = len(low_counts)
    if n <= budget:
        return []
    counts = np.array(low_counts, dtype=np.int64)
    counts[max(n - recent, 0):] = 0
    how_many = max(n - budget, min(drop, n - recent - sinks))
    candidates = list(range(sinks, n - recent))
    # Largest count first; among equals the older slot goes first.
    candidates.sort(key=lambda j: (-counts[j], j))
    return sorted(candidates[:how_many])


def h2o_evict(sums: np.ndarray, budget: int, recent: int, drop: int, sinks: int) -> List[int]:
    """Slot indices H2O evicts from a head whose slots have accumulated `sums`: the count
    rule of Scissorhands, the smallest sums first, the older slot first on ties."""
    n = len(sums)
    if n <= budget:
        return []
    m = drop or budget // 2
    count = max(n - budget, min(m, n - recent - sinks))
    candidates = sorted(range(sinks, n - recent), key=lambda j: (float(sums[j]), j))
    return sorted(candidates[:count])


def windowkv_scores(t: np.ndarray, omega: int, top_p: int) -> List[float]:
    """Window scores from sums t [heads, candidates]: per head the mean of the top_p largest
    of each window (min(top_p, length) for a short last window), then the mean over heads."""
    heads, candidates = t.shape
    windows = (candidates + omega - 1) // omega
    scores = []
    for k in range(windows):
        lo, hi = k * omega, min((k + 1) * omega, candidates)
        total = 0.0
        for h in range(heads):
            top = sorted((float(x) for x in t[h, lo:hi]), reverse=True)[:min(top_p, hi - lo)]
            total += sum(top) / len(top)
        scores.append(total / heads)
    return scores


def windowkv_kept(t: np.ndarray, n: int, alpha: int, omega: int, top_p: int, budget: int) -> List[int]:
    """Positions kept of n tokens: whole windows of the n - alpha candidates by score,
    dropped lowest first (the earlier window first among equals) until b = budget - alpha
    fit, plus the observation window."""
    candidates, b = n - alpha, budget - alpha
    if candidates <= b:
        return list(range(n))
    scores = windowkv_scores(t, omega, top_p)
    keep = np.ones(n, dtype=bool)
    kept = candidates
    for _, k in sorted((s, k) for k, s in enumerate(scores)):
        if kept <= b:
            break
        lo, hi = k * omega, min((k + 1) * omega, candidates)
        keep[lo:hi] = False
        kept -= hi - lo
    return list(np.flatnonzero(keep))


def windowkv_group_budgets(mean_budget: int, gamma: int, lambda_: int, groups: int) -> List[int]:
    if groups == 1:
        return [mean_budget]
    last = mean_budget * gamma // lambda_
    first = 2 * mean_budget - last
    return [first - (g * (first - last)) // (groups - 1) for g in range(groups)]


class ReferenceCache(KVCache):
    """A KVCache that applies one policy itself, from the README's algorithms.

    policy: ("full",), ("streaming", budget, sinks),
    ("scissorhands", budget, window, recent, drop, sinks, threshold_scale),
    ("h2o", budget, recent, drop, sinks) or
    ("windowkv", mean_budget, alpha, omega, top_p, gamma, lambda)."""

    def __init__(self, n_layers, n_kv_heads, head_dim, group, policy: Tuple):
        kind = policy[0]
        threshold = policy[6] if kind == "scissorhands" else 1.0
        alpha = policy[2] if kind == "windowkv" else 0
        gamma = policy[5] if kind == "windowkv" else 1
        super().__init__(n_layers, n_kv_heads, head_dim, group, threshold_scale=threshold,
                         window_alpha=alpha, window_layers=range(0, n_layers, gamma))
        self.policy = policy
        # Scissorhands history per (layer, head): the last `window` steps, each the
        # positions attended and the positions listed.
        self._history: Dict[Tuple[int, int], deque] = {}
        # H2O: per (layer, head) the accumulated attention of each live slot (float32,
        # added step by step as the daemon adds them).
        self._sums: Dict[Tuple[int, int], np.ndarray] = {}
        self.selected = False

    def make_room(self, num_tokens):
        if self.policy[0] != "streaming":
            return
        _, budget, sinks = self.policy
        for layer in range(self.n_layers):
            for h in range(self.n_kv_heads):
                n = self.slots(layer, h)
                if n + num_tokens > budget:
                    self.keep_slots(layer, h, streaming_kept(n, budget - num_tokens, sinks))

    def apply_retention(self):
        kind = self.policy[0]
        if kind == "scissorhands" and self.stats.listed:
            self._scissorhands()
        elif kind == "h2o" and self.stats.dense:
            self._h2o()
        elif kind == "windowkv" and self.stats.window_sums and not self.selected:
            self._windowkv()

    def _scissorhands(self):
        _, budget, window, recent, drop, sinks, _ = self.policy
        for (layer, h), (attended, listed) in self.stats.listed.items():
            hist = self._history.setdefault((layer, h), deque(maxlen=window))
            pos = self.pos[layer][h]
            hist.append((set(pos[:attended].tolist()), set(pos[listed].tolist())))
            if len(pos) <= budget:
                continue
            low = np.zeros(len(pos), dtype=np.int64)
            for j, p in enumerate(pos.tolist()):
                low[j] = sum(1 for seen, heavy in hist if p in seen and p not in heavy)
            evict = scissorhands_evict(low, budget, recent, drop, sinks)
            self.keep_slots(layer, h, [j for j in range(len(pos)) if j not in set(evict)])

    def _h2o(self):
        _, budget, recent, drop, sinks = self.policy
        for (layer, h), row in self.stats.dense.items():
            n = len(self.pos[layer][h])
            sums = np.zeros(n, dtype=np.float32)
            old = self._sums.get((layer, h), np.zeros(0, dtype=np.float32))
            sums[:len(old)] = old
            sums[:len(row)] += row
            evict = set(h2o_evict(sums, budget, recent, drop, sinks))
            kept = [j for j in range(n) if j not in evict]
            if evict:
                self.keep_slots(layer, h, kept)
            self._sums[(layer, h)] = sums[kept]

    def _windowkv(self):
        _, mean_budget, alpha, omega, top_p, gamma, lambda_ = self.policy
        groups = self.n_layers // gamma
        budgets = windowkv_group_budgets(mean_budget, gamma, lambda_, groups)
        for leader, sums in self.stats.window_sums.items():
            n = self.slots(leader, 0)
            kept = windowkv_kept(sums, n, alpha, omega, top_p, budgets[leader // gamma])
            for layer in range(leader, leader + gamma):
                for h in range(self.n_kv_heads):
                    self.keep_slots(layer, h, kept)
        self.selected = True


def persistence_ratio(steps: List[Tuple[int, Dict[Tuple[int, int], np.ndarray]]], n_layers: int,
                      window: int) -> List[float]:
    """The Scissorhands paper's persistence of importance, per layer. steps[t] is (the
    position of step t's token, {(layer, head): positions with attention >= 1/n}). Over
    steps and heads: the share of a step's heavy positions that were heavy at least once
    in the previous `window` steps, counting only positions that existed before that
    window began (younger ones could not have been heavy all through it)."""
    ratios = []
    for layer in range(n_layers):
        hit = total = 0
        for t in range(window, len(steps)):
            born_before = steps[t - window][0]
            for (l, h), heavy in steps[t][1].items():
                if l != layer:
                    continue
                earlier = set()
                for s in range(t - window, t):
                    earlier.update(steps[s][1].get((l, h), np.zeros(0)).tolist())
                old = [p for p in heavy.tolist() if p < born_before]
                hit += sum(1 for p in old if p in earlier)
                total += len(old)
        ratios.append(hit / total if total else math.nan)
    return ratios
