"""Plain values the client hands out and takes: layouts, policies, sequences, statistics."""

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from kvwarden.v1 import control_pb2, layout_pb2, options_pb2, policy_pb2

_DTYPES = {
    layout_pb2.DTYPE_FP16: ("fp16", np.dtype(np.float16)),
    # NumPy has no bfloat16: its elements come as raw 16-bit words.
    layout_pb2.DTYPE_BF16: ("bf16", np.dtype(np.uint16)),
    layout_pb2.DTYPE_FP32: ("fp32", np.dtype(np.float32)),
}


@dataclass(frozen=True)
class Layout:
    """A pool's KV layout. K (or V) of one layer is [num_kv_heads, tokens, head_dim]."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str  # "fp16", "bf16" (raw uint16 words in NumPy) or "fp32"
    np_dtype: np.dtype
    page_tokens: int

    @staticmethod
    def from_proto(p: layout_pb2.KvLayout) -> "Layout":
        name, dt = _DTYPES[p.dtype]
        return Layout(p.num_layers, p.num_kv_heads, p.head_dim, name, dt, p.page_tokens)

    @property
    def token_bytes(self) -> int:
        """Bytes of one token's K (or V) in one head."""
        return self.head_dim * self.np_dtype.itemsize

    @property
    def page_bytes(self) -> int:
        return 2 * self.num_kv_heads * self.page_tokens * self.token_bytes


class Policy:
    """Retention policies (proto/kvwarden/v1/policy.proto); zero means the default."""

    def __init__(self, proto: policy_pb2.RetentionPolicy):
        self.proto = proto

    @staticmethod
    def value_or_default(message, name: str):
        """`name` of a policy message, or the default the daemon gives it when zero (or
        unset, for an `optional` field): the field's [(field_default)] in policy.proto."""
        fd = message.DESCRIPTOR.fields_by_name[name]
        options = fd.GetOptions()
        if not options.HasExtension(options_pb2.field_default):
            raise KeyError(f"{message.DESCRIPTOR.full_name}.{name} has no documented default")
        unset = not message.HasField(name) if fd.has_presence else getattr(message, name) == 0
        if not unset:
            return getattr(message, name)
        value = options.Extensions[options_pb2.field_default]
        return int(value) if fd.cpp_type != fd.CPPTYPE_FLOAT else value

    @staticmethod
    def full() -> "Policy":
        p = policy_pb2.RetentionPolicy()
        p.full.SetInParent()
        return Policy(p)

    @staticmethod
    def streaming(budget: int, sinks: Optional[int] = None) -> "Policy":
        p = policy_pb2.RetentionPolicy()
        p.streaming.budget = budget
        if sinks is not None:
            p.streaming.sinks = sinks
        return Policy(p)

    @staticmethod
    def scissorhands(budget: int, window: int = 0, recent: int = 0, drop: int = 0, sinks: int = 0,
                     threshold_scale: float = 0.0, layer_budgets: Optional[List[int]] = None) -> "Policy":
        p = policy_pb2.RetentionPolicy()
        s = p.scissorhands
        s.budget, s.window, s.recent, s.drop, s.sinks = budget, window, recent, drop, sinks
        s.threshold_scale = threshold_scale
        s.layer_budgets.extend(layer_budgets or [])
        return Policy(p)

    @staticmethod
    def h2o(budget: int, recent: int = 0, drop: int = 0, sinks: int = 0,
            layer_budgets: Optional[List[int]] = None) -> "Policy":
        """H2O: keeps the slots with the largest accumulated attention (dense stats rows)."""
        p = policy_pb2.RetentionPolicy()
        h = p.h2o
        h.budget, h.recent, h.drop, h.sinks = budget, recent, drop, sinks
        h.layer_budgets.extend(layer_budgets or [])
        return Policy(p)

    @staticmethod
    def windowkv(mean_budget: int, alpha: int = 0, omega: Optional[int] = None, top_p: int = 0,
                 gamma: int = 0, lambda_: int = 0, aggregation: bool = False) -> "Policy":
        p = policy_pb2.RetentionPolicy()
        w = p.windowkv
        w.mean_budget, w.alpha, w.top_p, w.gamma = mean_budget, alpha, top_p, gamma
        setattr(w, "lambda", lambda_)
        if omega is not None:
            w.omega = omega
        if aggregation:
            w.task = policy_pb2.WindowKvPolicy.TASK_AGGREGATION
        return Policy(p)


@dataclass(frozen=True)
class Lease:
    """A worker lease; the Client keeps it alive until released or the client closes."""

    id: int
    ttl_ms: int


@dataclass(frozen=True)
class Sequence:
    id: int
    layout: Layout
    pool: str
    epoch: int = 0


@dataclass(frozen=True)
class Handle:
    """Where a tenant's named sequence is (publish_handle, resolve_handle): connect a
    Client to `grpc_address` and use Sequence id `sequence_id` there."""
    handle: str
    node: str
    grpc_address: str
    sequence_id: int


@dataclass(frozen=True)
class NodePool:
    name: str
    device: str  # "cpu" or "cuda:N"
    layout: Layout
    capacity_pages: int
    free_pages: int


@dataclass(frozen=True)
class NodeInfo:
    """A node of the cluster as the daemons see it (Client.list_nodes, ClusterClient):
    connect to `grpc_address` to use it. Free pages are as of `updated_unix_ms`."""
    node: str
    grpc_address: str
    version: str
    migration_transport: str  # "tcp", or "none": it neither sends nor takes sequences
    pools: List[NodePool]
    updated_unix_ms: int

    @staticmethod
    def from_proto(n) -> "NodeInfo":
        return NodeInfo(n.node, n.grpc_address, n.version, n.migration_transport,
                        [NodePool(p.name, p.device, Layout.from_proto(p.layout), p.capacity_pages, p.free_pages)
                         for p in n.pools], n.updated_unix_ms)


@dataclass(frozen=True)
class Migration:
    """Where a migrated sequence went (migrate_sequence): its id and owning lease on
    node `node`, which serves at `grpc_address`."""
    node: str
    grpc_address: str
    sequence_id: int
    lease_id: int
    bytes_moved: int
    duration_s: float


@dataclass(frozen=True)
class Reservation:
    first_position: int
    num_tokens: int
    first_slot: int
    epoch: int
    first_slots: List[int]  # per (layer, head) when heads hold different counts, else empty
    # Heads whose oldest slots the daemon dropped to make room (streaming).
    evicted: List["HeadRetention"] = field(default_factory=list)


@dataclass
class LayerKV:
    """One layer's live slots as ReadKV returned them: per head, K and V
    [live_slots, head_dim] and the original token positions of those slots."""

    layer: int
    epoch: int
    k: List[np.ndarray]
    v: List[np.ndarray]
    positions: List[np.ndarray]

    def dense(self):
        """(K, V) as [heads, tokens, head_dim] when every head holds the same positions."""
        if any(len(p) != len(self.positions[0]) or not np.array_equal(p, self.positions[0])
               for p in self.positions):
            raise ValueError(f"layer {self.layer}: heads hold different positions (retention)")
        return np.stack(self.k), np.stack(self.v)


@dataclass
class HeadStats:
    """One (layer, head) of a decode step: `attended` slots existed; `listed` are the slots
    with attention at or above the threshold (sparse mode), or `dense` the whole row."""

    layer: int
    head: int
    attended: int
    listed: Optional[np.ndarray] = None
    dense: Optional[np.ndarray] = None

    def to_proto(self) -> control_pb2.HeadStats:
        h = control_pb2.HeadStats(layer=self.layer, head=self.head, attended=self.attended)
        if self.listed is not None:
            h.listed.extend(np.asarray(self.listed, dtype=np.uint32).tolist())
        if self.dense is not None:
            h.dense.extend(np.asarray(self.dense, dtype=np.float32).tolist())
        return h


@dataclass
class HeadRetention:
    """One (layer, head) that retention changed: its live slots after, and the original
    positions that went."""

    layer: int
    head: int
    live_slots: int
    evicted_positions: np.ndarray

    @staticmethod
    def from_proto(h: control_pb2.HeadRetention) -> "HeadRetention":
        return HeadRetention(h.layer, h.head, h.live_slots, np.array(h.evicted_positions, dtype=np.uint32))


@dataclass
class RetentionUpdate:
    sequence_id: int
    epoch: int
    steps_applied: int
    heads: List[HeadRetention] = field(default_factory=list)
    pages_freed: int = 0

    @staticmethod
    def from_proto(u: control_pb2.RetentionUpdate) -> "RetentionUpdate":
        return RetentionUpdate(
            u.sequence_id, u.epoch, u.steps_applied,
            [HeadRetention.from_proto(h) for h in u.heads],
            u.pages_freed)
