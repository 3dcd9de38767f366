"""A llama2.c-format Llama model in torch: the checkpoint loader, the tokenizer and a forward
pass whose attention goes through a KV cache object (kvwarden.harness.cache), so the same model
runs with an in-memory cache, an in-process policy reference or kvwardend.

The format (legacy export, version 0) is described in shared/models/stories260k/README.md.
RoPE is applied with each token's original position, so kept tokens keep their rotation
after retention drops their neighbours.
"""

import struct
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch


@dataclass(frozen=True)
class LlamaConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.head_dim * self.n_kv_heads

    @property
    def group(self) -> int:
        """Query heads per KV head (grouped-query attention)."""
        return self.n_heads // self.n_kv_heads


class LlamaWeights:
    """Every tensor of a llama2.c checkpoint, float32, [out, in] matrices."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            header = f.read(28)
            if len(header) != 28:
                raise ValueError(f"{path}: shorter than the 28-byte llama2.c header")
            dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("<7i", header)
            data = np.frombuffer(f.read(), dtype="<f4")
        shared = vocab > 0
        vocab = abs(vocab)
        if min(dim, hidden, layers, heads, kv_heads, vocab, seq_len) <= 0 or dim % heads or heads % kv_heads:
            raise ValueError(f"{path}: not a llama2.c checkpoint (header {dim, hidden, layers, heads, kv_heads, vocab, seq_len})")
        self.config = c = LlamaConfig(dim, hidden, layers, heads, kv_heads, vocab, seq_len)
        at = 0

        def take(*shape):
            nonlocal at
            n = int(np.prod(shape))
            if at + n > data.size:
                raise ValueError(f"{path}: truncated (needs more than {data.size * 4} bytes of weights)")
            t = torch.from_numpy(data[at:at + n].copy()).reshape(shape)
            at += n
            return t

        self.tok_embeddings = take(c.vocab_size, c.dim)
        self.rms_att = take(c.n_layers, c.dim)
        self.wq = take(c.n_layers, c.dim, c.dim)
        self.wk = take(c.n_layers, c.kv_dim, c.dim)
        self.wv = take(c.n_layers, c.kv_dim, c.dim)
        self.wo = take(c.n_layers, c.dim, c.dim)
        self.rms_ffn = take(c.n_layers, c.dim)
        self.w1 = take(c.n_layers, c.hidden_dim, c.dim)
        self.w2 = take(c.n_layers, c.dim, c.hidden_dim)
        self.w3 = take(c.n_layers, c.hidden_dim, c.dim)
        self.rms_final = take(c.dim)
        at += c.seq_len * c.head_dim  # the legacy RoPE tables: recomputed below
        self.wcls = self.tok_embeddings if shared else take(c.vocab_size, c.dim)


class Tokenizer:
    """llama2.c's tokenizer.bin: pieces with merge scores; BOS = 1, EOS = 2, bytes 3..258."""

    BOS, EOS = 1, 2

    def __init__(self, path: str, vocab_size: int):
        with open(path, "rb") as f:
            (self.max_token_length,) = struct.unpack("<i", f.read(4))
            self.pieces: List[bytes] = []
            self.scores: List[float] = []
            for _ in range(vocab_size):
                score, length = struct.unpack("<fi", f.read(8))
                self.scores.append(score)
                self.pieces.append(f.read(length))
        self._ids = {p: i for i, p in enumerate(self.pieces)}

    def encode(self, text: str, bos: bool = True) -> List[int]:
        """SentencePiece-style: dummy prefix space, characters (else UTF-8 byte pieces),
        then merge the best-scoring adjacent pair until none merges."""
        ids: List[int] = []
        for ch in " " + text if text else "":
            piece = ch.encode("utf-8")
            if piece in self._ids:
                ids.append(self._ids[piece])
            else:
                ids.extend(b + 3 for b in piece)
        while True:
            best, best_at = None, -1
            for i in range(len(ids) - 1):
                merged = self._ids.get(self.pieces[ids[i]] + self.pieces[ids[i + 1]])
                if merged is not None and (best is None or self.scores[merged] > self.scores[best]):
                    best, best_at = merged, i
            if best is None:
                break
            ids[best_at:best_at + 2] = [best]
        return ([self.BOS] if bos else []) + ids

    def piece(self, prev: int, token: int) -> bytes:
        p = self.pieces[token]
        if prev == self.BOS and p.startswith(b" "):
            p = p[1:]  # the dummy prefix after BOS
        if p.startswith(b"<0x") and p.endswith(b">") and len(p) == 6:
            p = bytes([int(p[3:5], 16)])
        return p

    def decode(self, tokens: List[int]) -> str:
        out, prev = bytearray(), self.BOS
        for t in tokens:
            if t != self.BOS:
                out += self.piece(prev, t)
            prev = t
        return out.decode("utf-8", errors="replace")


def rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotates consecutive pairs (2i, 2i+1) of each head of x [T, heads, head_dim] by
    position * 10000^(-2i/head_dim)."""
    hd = x.shape[-1]
    freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]  # [T, hd/2]
    cos, sin = torch.cos(angles)[:, None, :], torch.sin(angles)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def rmsnorm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w


class Llama:
    """forward(tokens, positions, cache): logits [T, vocab] of T new tokens whose K/V the
    cache appends and attends over (see kvwarden.harness.cache.KVCache.attend)."""

    def __init__(self, weights: LlamaWeights):
        self.w = weights
        self.config = weights.config

    @staticmethod
    def load(path: str) -> "Llama":
        return Llama(LlamaWeights(path))

    @torch.no_grad()
    def forward(self, tokens: List[int], positions: List[int], cache) -> torch.Tensor:
        c, w = self.config, self.w
        T = len(tokens)
        pos = torch.tensor(positions, dtype=torch.int64)
        x = w.tok_embeddings[torch.tensor(tokens, dtype=torch.int64)]
        for layer in range(c.n_layers):
            h = rmsnorm(x, w.rms_att[layer])
            q = rope((h @ w.wq[layer].T).view(T, c.n_heads, c.head_dim), pos)
            k = rope((h @ w.wk[layer].T).view(T, c.n_kv_heads, c.head_dim), pos)
            v = (h @ w.wv[layer].T).view(T, c.n_kv_heads, c.head_dim)
            att = cache.attend(layer, q, k, v)  # [T, n_heads, head_dim]
            x = x + att.reshape(T, c.dim) @ w.wo[layer].T
            h = rmsnorm(x, w.rms_ffn[layer])
            x = x + (torch.nn.functional.silu(h @ w.w1[layer].T) * (h @ w.w3[layer].T)) @ w.w2[layer].T
        return rmsnorm(x, w.rms_final) @ w.wcls.T


def sample(logits: torch.Tensor, temperature: float, generator: Optional[torch.Generator] = None) -> int:
    """Greedy at temperature 0, else a draw from softmax(logits / temperature)."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
