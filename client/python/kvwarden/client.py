"""kvwarden.Client: every RPC of kvwardend (control, transfer, admin) from Python."""

import threading
from typing import Dict, Iterator, List, Optional

import grpc
import numpy as np

from kvwarden.errors import KvwardenError
from kvwarden.types import (Handle, HeadRetention, LayerKV, Layout, Lease, Migration, NodeInfo, Policy, Reservation,
                            Sequence)
from kvwarden.v1 import admin_pb2, admin_pb2_grpc, control_pb2, control_pb2_grpc
from kvwarden.v1 import transfer_pb2, transfer_pb2_grpc

# One WriteKV message carries at most this much K+V (the daemon's ReadKV bound too).
_MAX_MESSAGE_BYTES = 512 * 1024  # common/net/kv_messages.h: the daemon and every client
_ROLES = {"prefill": control_pb2.WORKER_ROLE_PREFILL, "decode": control_pb2.WORKER_ROLE_DECODE,
          "both": control_pb2.WORKER_ROLE_BOTH}


class _KeepAlive:
    """Renews one lease every third of its TTL on a daemon thread until stopped."""

    def __init__(self, client: "Client", lease: Lease):
        self._client, self._lease = client, lease
        self._stop = threading.Event()
        self.error: Optional[KvwardenError] = None
        self._thread = threading.Thread(target=self._run, name=f"kvw-keepalive-{lease.id}", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(max(self._lease.ttl_ms / 3000.0, 0.01)):
            try:
                self._client.keep_alive(self._lease)
            except KvwardenError as e:
                if e.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                              grpc.StatusCode.PERMISSION_DENIED):
                    self.error = e  # the lease is gone: nothing left to renew
                    return

    def stop(self):
        self._stop.set()
        self._thread.join()


class Pending:
    """A call in flight (Client.*_async): wait() returns its result as the blocking call
    would, or raises KvwardenError."""

    def __init__(self, future, finish):
        self._future, self._finish = future, finish

    def wait(self):
        try:
            resp = self._future.result()
        except grpc.RpcError as e:
            raise KvwardenError.from_rpc(e) from None
        return self._finish(resp)


class Client:
    """A connection to one kvwardend as one tenant (or the operator, with the admin token).

    Thread-safe: calls may come from any thread. `timeout` is every unary call's deadline
    in seconds. Use as a context manager, or call close().
    """

    def __init__(self, target: str, token: str, timeout: float = 10.0,
                 channel: Optional[grpc.Channel] = None,
                 credentials: Optional[grpc.ChannelCredentials] = None, server_name: Optional[str] = None):
        """`credentials` (e.g. kvwarden.tls_credentials(...)) connects with TLS; `server_name`
        overrides the name checked against the daemon's certificate."""
        self.target, self.token, self.timeout = target, token, timeout
        # Unbounded messages: the daemon bounds its own (512 KiB of K+V each).
        options = [("grpc.max_receive_message_length", 64 << 20)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if channel is None:
            channel = (grpc.secure_channel(target, credentials, options=options) if credentials is not None
                       else grpc.insecure_channel(target, options=options))
        self._channel = channel
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.control = control_pb2_grpc.ControlServiceStub(self._channel)
        self.transfer = transfer_pb2_grpc.TransferServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._keepalives: Dict[int, _KeepAlive] = {}
        self._lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------------
    def _unary(self, method, request):
        try:
            return method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as e:
            raise KvwardenError.from_rpc(e) from None

    @property
    def metadata(self):
        return self._metadata

    def close(self):
        """A clean exit: the leases this client still keeps alive are released (their
        sequences go now, and the daemon logs a release, not a lapse); a lease handed to
        stop_keep_alive is left to its TTL. Then the channel closes."""
        with self._lock:
            keepalives, self._keepalives = list(self._keepalives.values()), {}
        for k in keepalives:
            k.stop()
        for k in keepalives:
            try:
                self.control.ReleaseWorker(control_pb2.ReleaseWorkerRequest(lease_id=k._lease.id),
                                           metadata=self._metadata, timeout=min(self.timeout, 2.0))
            except grpc.RpcError:
                pass  # already gone (released, lapsed) or the daemon is unreachable: nothing to undo
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- workers ---------------------------------------------------------------------
    def ping(self) -> control_pb2.PingResponse:
        return self._unary(self.control.Ping, control_pb2.PingRequest())

    def register_worker(self, name: str, role: str = "both", ttl_ms: int = 0, keep_alive: bool = True) -> Lease:
        """A worker lease (role "prefill", "decode" or "both"); its sequences go when it
        lapses. With keep_alive, a thread renews it until release_lease or close."""
        resp = self._unary(self.control.RegisterWorker,
                           control_pb2.RegisterWorkerRequest(name=name, role=_ROLES[role], ttl_ms=ttl_ms))
        lease = Lease(resp.lease_id, resp.ttl_ms)
        if keep_alive:
            with self._lock:
                self._keepalives[lease.id] = _KeepAlive(self, lease)
        return lease

    def keep_alive(self, lease: Lease) -> int:
        return self._unary(self.control.KeepAlive, control_pb2.KeepAliveRequest(lease_id=lease.id)).ttl_ms

    def release_lease(self, lease: Lease) -> int:
        """Ends the lease now (a clean exit): its sequences and transfers go at once instead
        of after the TTL. Returns how many sequences were released."""
        self.stop_keep_alive(lease)
        return self._unary(self.control.ReleaseWorker,
                           control_pb2.ReleaseWorkerRequest(lease_id=lease.id)).released_sequences

    def stop_keep_alive(self, lease: Lease):
        """Stops renewing `lease`: it lapses after its TTL (and its sequences with it)."""
        with self._lock:
            k = self._keepalives.pop(lease.id, None)
        if k is not None:
            k.stop()

    # -- sequences -------------------------------------------------------------------
    def create_sequence(self, lease: Lease, pool: str, max_tokens: int, policy: Optional[Policy] = None) -> Sequence:
        req = control_pb2.CreateSequenceRequest(lease_id=lease.id, pool=pool, max_tokens=max_tokens)
        if policy is not None:
            req.policy.CopyFrom(policy.proto)
        resp = self._unary(self.control.CreateSequence, req)
        return Sequence(resp.sequence_id, Layout.from_proto(resp.layout), pool, resp.epoch)

    def fork_sequence(self, seq: Sequence, lease: Lease) -> Sequence:
        resp = self._unary(self.control.ForkSequence,
                           control_pb2.ForkSequenceRequest(sequence_id=seq.id, lease_id=lease.id))
        return Sequence(resp.sequence_id, seq.layout, seq.pool, seq.epoch)

    def release_sequence(self, seq: Sequence) -> int:
        """Returns the pages that went back to the pool."""
        return self._unary(self.control.ReleaseSequence,
                           control_pb2.ReleaseSequenceRequest(sequence_id=seq.id)).freed_pages

    def describe_sequence(self, seq: Sequence, include_pages: bool = False) -> control_pb2.SequenceInfo:
        """Epoch, tokens, policy, pages and per (layer, head) live slots and budgets."""
        return self._unary(self.control.DescribeSequence,
                           control_pb2.DescribeSequenceRequest(sequence_id=seq.id, include_pages=include_pages))

    def migrate_sequence(self, seq: Sequence, target_node: str, target_lease: Optional[int] = None,
                         hold_ms: int = 0, timeout: float = 60.0) -> Migration:
        """Cluster mode: moves `seq` to node `target_node`, byte for byte with its positions
        per head, epoch and policy state. On success it is gone here; on any error it is
        still here, unchanged. `target_lease`: a lease id of this tenant on the target to
        own it; else the target holds it `hold_ms` (0: 30 s) for a worker to fork."""
        req = control_pb2.MigrateSequenceRequest(sequence_id=seq.id, target_node=target_node,
                                                 target_lease_id=target_lease or 0, hold_ms=hold_ms)
        try:
            r = self.control.MigrateSequence(req, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as e:
            raise KvwardenError.from_rpc(e) from None
        return Migration(r.node, r.grpc_address, r.sequence_id, r.lease_id, r.bytes_moved, r.duration_us / 1e6)

    def publish_handle(self, seq: Sequence, handle: str) -> Handle:
        """Cluster mode: names `seq` for this tenant across the cluster; the name follows
        it when it migrates and goes when it ends."""
        r = self._unary(self.control.PublishHandle, control_pb2.PublishHandleRequest(sequence_id=seq.id, handle=handle))
        return Handle(r.handle, r.node, r.grpc_address, r.sequence_id)

    def resolve_handle(self, handle: str) -> Handle:
        """Where this tenant's sequence named `handle` is now (asked of any node)."""
        r = self._unary(self.control.ResolveHandle, control_pb2.ResolveHandleRequest(handle=handle))
        return Handle(r.handle, r.node, r.grpc_address, r.sequence_id)

    def list_nodes(self) -> "tuple[str, List[NodeInfo]]":
        """Cluster mode: (the answering node's name, every node of the cluster)."""
        r = self._unary(self.control.ListNodes, control_pb2.ListNodesRequest())
        return r.self, [NodeInfo.from_proto(n) for n in r.nodes]

    def reserve_slots(self, seq: Sequence, num_tokens: int) -> Reservation:
        return self.reserve_slots_async(seq, num_tokens).wait()

    def reserve_slots_async(self, seq: Sequence, num_tokens: int) -> Pending:
        """reserve_slots without waiting: wait() returns the Reservation."""
        future = self.control.ReserveSlots.future(
            control_pb2.ReserveSlotsRequest(sequence_id=seq.id, num_tokens=num_tokens),
            metadata=self._metadata, timeout=self.timeout)
        return Pending(future, lambda r: Reservation(r.first_position, r.num_tokens, r.first_slot, r.epoch,
                                                     list(r.first_slots),
                                                     [HeadRetention.from_proto(h) for h in r.evicted]))

    # -- KV bytes ----------------------------------------------------------------------
    def write_kv(self, seq: Sequence, k: np.ndarray, v: np.ndarray, token_start: int, layer_start: int = 0) -> int:
        """Writes K and V of shape [layers, num_kv_heads, tokens, head_dim] (the pool's
        dtype) for positions [token_start, token_start + tokens) of layers from
        `layer_start`. Returns the bytes written; every message is checked as applied."""
        return self.write_kv_async(seq, k, v, token_start, layer_start).wait()

    def write_kv_async(self, seq: Sequence, k: np.ndarray, v: np.ndarray, token_start: int,
                       layer_start: int = 0) -> Pending:
        """write_kv without waiting: the bytes are serialized now, the call runs in the
        background; wait() returns the bytes written or raises KvwardenError."""
        lay = seq.layout
        k, v = np.asarray(k), np.asarray(v)
        if k.shape != v.shape or k.ndim != 4 or k.shape[1] != lay.num_kv_heads or k.shape[3] != lay.head_dim:
            raise ValueError(f"k and v must both be [layers, {lay.num_kv_heads}, tokens, {lay.head_dim}], "
                             f"got {k.shape} and {v.shape}")
        if k.dtype != lay.np_dtype or v.dtype != lay.np_dtype:
            raise ValueError(f"k and v must be {lay.np_dtype} ({lay.dtype}), got {k.dtype} and {v.dtype}")
        layers, _, tokens, _ = k.shape
        per_token = 2 * lay.num_kv_heads * lay.token_bytes
        chunk = max(1, _MAX_MESSAGE_BYTES // per_token)

        def messages():
            for layer in range(layers):
                for t0 in range(0, tokens, chunk):
                    t1 = min(tokens, t0 + chunk)
                    yield control_pb2.WriteKVRequest(
                        sequence_id=seq.id, layer=layer_start + layer, token_start=token_start + t0,
                        num_tokens=t1 - t0, k=np.ascontiguousarray(k[layer, :, t0:t1]).tobytes(),
                        v=np.ascontiguousarray(v[layer, :, t0:t1]).tobytes())

        expected = layers * ((tokens + chunk - 1) // chunk)
        future = self.control.WriteKV.future(iter(list(messages())), metadata=self._metadata, timeout=self.timeout)

        def finish(resp):
            if resp.messages != expected:
                raise KvwardenError(grpc.StatusCode.DATA_LOSS,
                                    f"the daemon applied {resp.messages} of {expected} WriteKV messages")
            return resp.bytes_written
        return Pending(future, finish)

    def read_kv(self, seq: Sequence, layer_start: int = 0, layer_count: Optional[int] = None,
                token_start: int = 0, token_end: int = 0, epoch: Optional[int] = None) -> List[LayerKV]:
        """The live slots of layers [layer_start, +layer_count) with positions in
        [token_start, token_end) (0: every reserved token), at `epoch` when given (else
        the current one, the same for every message)."""
        lay = seq.layout
        if layer_count is None:
            layer_count = lay.num_layers - layer_start
        req = control_pb2.ReadKVRequest(sequence_id=seq.id, layer_start=layer_start, layer_count=layer_count,
                                        token_start=token_start, token_end=token_end)
        if epoch is not None:
            req.epoch = epoch
        out: Dict[int, dict] = {}
        try:
            for m in self.control.ReadKV(req, metadata=self._metadata, timeout=self.timeout):
                parts = out.setdefault(m.layer, {"epoch": m.epoch, "k": [[] for _ in range(lay.num_kv_heads)],
                                                 "v": [[] for _ in range(lay.num_kv_heads)],
                                                 "pos": [[] for _ in range(lay.num_kv_heads)]})
                k = np.frombuffer(m.k, dtype=lay.np_dtype).reshape(-1, lay.head_dim)
                v = np.frombuffer(m.v, dtype=lay.np_dtype).reshape(-1, lay.head_dim)
                positions = np.array(m.positions, dtype=np.uint32)
                at = 0
                for h, n in enumerate(m.head_live_counts):
                    parts["k"][h].append(k[at:at + n])
                    parts["v"][h].append(v[at:at + n])
                    # No positions: every head holds the message's whole token range.
                    parts["pos"][h].append(positions[at:at + n] if len(positions)
                                           else np.arange(m.token_start, m.token_end, dtype=np.uint32))
                    at += n
        except grpc.RpcError as e:
            raise KvwardenError.from_rpc(e) from None

        def cat(chunks, width):
            return np.concatenate(chunks) if chunks else np.zeros((0,) + width, dtype=lay.np_dtype)

        return [LayerKV(layer, p["epoch"], [cat(c, (lay.head_dim,)) for c in p["k"]],
                        [cat(c, (lay.head_dim,)) for c in p["v"]],
                        [np.concatenate(c) if c else np.zeros(0, dtype=np.uint32) for c in p["pos"]])
                for layer, p in sorted(out.items())]

    # -- statistics ----------------------------------------------------------------------
    def stats_stream(self):
        """A StreamStats stream: send decode steps or window scores, get retention updates."""
        from kvwarden.stats import StatsStream
        return StatsStream(self)

    # -- transfers and attach -------------------------------------------------------------
    def get_data_plane(self, pool: str = "main") -> transfer_pb2.DataPlaneInfo:
        return self._unary(self.transfer.GetDataPlane, transfer_pb2.GetDataPlaneRequest(pool=pool))

    def begin_transfer(self, lease: Lease, seq: Sequence, slot_start: int, slot_end: int, mode: str = "read",
                       layer_start: int = 0, layer_count: Optional[int] = None, ttl_ms: int = 0,
                       known_chunks: Optional[Dict[int, int]] = None) -> transfer_pb2.TransferGrant:
        """A transfer lease pinning slots [slot_start, slot_end) of the layers: retention
        does not move them until end_transfer (or the TTL). mode "read" or "write"."""
        req = transfer_pb2.BeginTransferRequest(
            lease_id=lease.id, sequence_id=seq.id, layer_start=layer_start,
            layer_count=seq.layout.num_layers - layer_start if layer_count is None else layer_count,
            slot_start=slot_start, slot_end=slot_end, ttl_ms=ttl_ms,
            mode=transfer_pb2.TRANSFER_MODE_WRITE if mode == "write" else transfer_pb2.TRANSFER_MODE_READ)
        for c, g in (known_chunks or {}).items():
            req.known_chunks.add(chunk=c, generation=g)
        return self._unary(self.transfer.BeginTransfer, req)

    def end_transfer(self, transfer_id: int):
        self._unary(self.transfer.EndTransfer, transfer_pb2.EndTransferRequest(transfer_id=transfer_id))

    def attach(self, lease: Lease, pool: str = "main"):
        """Maps the tenant's chunks of `pool` (same host): pages become NumPy views."""
        from kvwarden.attach import AttachedPool
        return AttachedPool(self, lease, pool)

    # -- admin (admin token) ------------------------------------------------------------------
    def list_pools(self) -> admin_pb2.ListPoolsResponse:
        return self._unary(self.admin.ListPools, admin_pb2.ListPoolsRequest())

    def list_tenants(self) -> admin_pb2.ListTenantsResponse:
        return self._unary(self.admin.ListTenants, admin_pb2.ListTenantsRequest())

    def list_sequences(self, tenant: str = "", pool: str = "") -> Iterator[control_pb2.SequenceInfo]:
        """Every sequence (following the pages of the listing)."""
        req = admin_pb2.ListSequencesRequest(tenant=tenant, pool=pool)
        while True:
            resp = self._unary(self.admin.ListSequences, req)
            yield from resp.sequences
            if not resp.next_page_token:
                return
            req.page_token = resp.next_page_token

    def list_workers(self) -> admin_pb2.ListWorkersResponse:
        return self._unary(self.admin.ListWorkers, admin_pb2.ListWorkersRequest())

    def list_transfers(self) -> admin_pb2.ListTransfersResponse:
        return self._unary(self.admin.ListTransfers, admin_pb2.ListTransfersRequest())

    def list_attachments(self) -> admin_pb2.ListAttachmentsResponse:
        return self._unary(self.admin.ListAttachments, admin_pb2.ListAttachmentsRequest())


def tls_credentials(ca_file: str, cert_file: Optional[str] = None, key_file: Optional[str] = None):
    """TLS credentials for Client: the CA that signed the daemon's certificate and, for
    mutual TLS, this client's certificate and key (PEM files)."""
    def read(path):
        with open(path, "rb") as f:
            return f.read()
    return grpc.ssl_channel_credentials(read(ca_file), read(key_file) if key_file else None,
                                        read(cert_file) if cert_file else None)
