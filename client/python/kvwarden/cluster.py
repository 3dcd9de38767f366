"""kvwarden.ClusterClient: a worker's view of a kvwarden cluster, through its daemons.

    with kvwarden.ClusterClient(["127.0.0.1:50051", "10.0.0.6:50051"], token="alpha-token") as cc:
        node = cc.place("main", pages=64)          # this worker's node first, else the most free
        c = cc.on(node.node)                       # a Client of that node
        where, holder = cc.resolve("req-42")       # a handle, and a Client of its node

Workers never talk to etcd: the daemons answer (ListNodes, ResolveHandle). The first seed
is taken to be this worker's own node unless `local_node` names it.
"""

import threading
from typing import Dict, List, Optional, Tuple

import grpc

from kvwarden.client import Client
from kvwarden.errors import KvwardenError
from kvwarden.types import Handle, Layout, Migration, NodeInfo, Sequence

# Only an unreachable seed is passed by: a refusal (a bad token, not a cluster) is the same
# on every node.
_PASS_BY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ClusterClient:
    def __init__(self, seeds: List[str], token: str, timeout: float = 10.0, local_node: Optional[str] = None,
                 credentials=None, server_name: Optional[str] = None):
        if not seeds:
            raise ValueError("seeds: name at least one daemon (host:port)")
        self.seeds, self.token, self.timeout = list(seeds), token, timeout
        self._local = local_node
        self._credentials, self._server_name = credentials, server_name
        self._clients: Dict[str, Client] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "ClusterClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            c.close()

    def _client(self, target: str) -> Client:
        with self._lock:
            c = self._clients.get(target)
            if c is None:
                c = Client(target, self.token, self.timeout, credentials=self._credentials,
                           server_name=self._server_name)
                self._clients[target] = c
            return c

    def _ask(self) -> Tuple[str, List[NodeInfo]]:
        failures = []
        for i, seed in enumerate(self.seeds):
            try:
                answered, nodes = self._client(seed).list_nodes()
            except KvwardenError as e:
                if e.code not in _PASS_BY:
                    raise
                failures.append(f"{seed}: {e}")
                continue
            if i == 0 and self._local is None:
                self._local = answered
            return answered, nodes
        raise KvwardenError(grpc.StatusCode.UNAVAILABLE, "no seed of the cluster answers (" + "; ".join(failures) + ")")

    def nodes(self) -> List[NodeInfo]:
        """Every node (asked of the first seed that answers)."""
        return self._ask()[1]

    def local_node(self) -> str:
        if self._local is None:
            self._local = self._client(self.seeds[0]).list_nodes()[0]
        return self._local

    def place(self, pool: str, pages: int = 1, layout: Optional[Layout] = None) -> NodeInfo:
        """Where a new sequence of `pool` needing `pages` pages goes: this worker's node when
        its pool has them free, else the node whose pool of that name (and layout) has the
        most free pages. NOT_FOUND when no node has such a pool, RESOURCE_EXHAUSTED when none
        has the room."""
        _, nodes = self._ask()
        local = self._local
        best, best_free, any_pool = None, -1, False
        for n in nodes:
            for p in n.pools:
                if p.name != pool or (layout is not None and p.layout != layout):
                    continue
                any_pool = True
                if p.free_pages < pages:
                    continue
                if n.node == local:
                    return n
                if p.free_pages > best_free:
                    best, best_free = n, p.free_pages
        if best is not None:
            return best
        if not any_pool:
            raise KvwardenError(grpc.StatusCode.NOT_FOUND, f"no node of the cluster has a pool '{pool}'")
        raise KvwardenError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"no node has {pages} free pages in pool '{pool}'")

    def on(self, node: str) -> Client:
        """A Client of `node` with this tenant's token (one per node, kept)."""
        for n in self.nodes():
            if n.node == node:
                return self._client(n.grpc_address)
        raise KvwardenError(grpc.StatusCode.NOT_FOUND, f"node '{node}' is not in the cluster")

    def resolve(self, handle: str) -> Tuple[Handle, Client]:
        """Where this tenant's sequence named `handle` is, and a Client of its node."""
        last = None
        for seed in self.seeds:
            try:
                h = self._client(seed).resolve_handle(handle)
                return h, self._client(h.grpc_address)
            except KvwardenError as e:
                if e.code not in _PASS_BY:
                    raise
                last = e
        raise last

    def migrate(self, from_node: str, seq: Sequence, to_node: str, **kwargs) -> Migration:
        """Moves `seq` from `from_node` to `to_node` (Client.migrate_sequence there)."""
        return self.on(from_node).migrate_sequence(seq, to_node, **kwargs)
