"""Same-host attach: the tenant's chunks of a CPU pool mapped into this process, pages
read (or, for prefill leases, written) in place as NumPy views, no copy."""

import mmap
import socket
import threading
import time
from typing import Dict, List, Optional, Tuple

import grpc
import numpy as np

from kvwarden.errors import KvwardenError
from kvwarden.types import Lease, Sequence
from kvwarden.v1 import transfer_pb2

_FDS_PER_RECORD = 200       # the daemon's SCM_RIGHTS batch (common/fd/seqpacket.h)
_MAX_RECORD = 256 * 1024


class PageView:
    """Pages of slots [slot_start, slot_end) of some layers, pinned by a transfer lease
    until close() or the lease's TTL. page(layer, i) gives K and V of the range's i-th page
    as NumPy arrays [num_kv_heads, page_tokens, head_dim]; k/v(layer, head, slot) one slot's
    row. Views into the mapped chunk: they read what the daemon holds, with no copy, and
    only while the pin holds: past expires_in() the daemon may move the pages, so page()
    then raises DEADLINE_EXCEEDED (map again, or ask a longer ttl_ms), and arrays taken
    before must not be read any more."""

    def __init__(self, client, grant: transfer_pb2.TransferGrant, seq: Sequence,
                 pages: Dict[int, List[np.ndarray]]):
        self._client, self.grant, self._seq, self._pages = client, grant, seq, pages
        self.epoch = grant.epoch
        self._transfer_id = grant.transfer_id
        self._expires_unix_ms = grant.expires_unix_ms

    def expires_in(self) -> float:
        """Seconds until the pin lapses (0 once it has, or after close())."""
        if self.grant is None:
            return 0.0
        return max(0.0, self._expires_unix_ms / 1000.0 - time.time())

    def _check(self):
        if self.grant is None:
            raise KvwardenError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"view of transfer {self._transfer_id} is closed")
        if self.expires_in() <= 0:
            raise KvwardenError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"the pin of transfer {self._transfer_id} expired: its pages may have moved; "
                                f"map again (or ask a longer ttl_ms)")

    def page(self, layer: int, index: int) -> Tuple[np.ndarray, np.ndarray]:
        self._check()
        lay = self._seq.layout
        raw = self._pages[layer][index]
        half = raw.size // 2
        shape = (lay.num_kv_heads, lay.page_tokens, lay.head_dim)
        return (raw[:half].view(lay.np_dtype).reshape(shape), raw[half:].view(lay.np_dtype).reshape(shape))

    def k(self, layer: int, head: int, slot: int) -> np.ndarray:
        k, _ = self.page(layer, slot // self._seq.layout.page_tokens - self.grant.first_page)
        return k[head, slot % self._seq.layout.page_tokens]

    def v(self, layer: int, head: int, slot: int) -> np.ndarray:
        _, v = self.page(layer, slot // self._seq.layout.page_tokens - self.grant.first_page)
        return v[head, slot % self._seq.layout.page_tokens]

    def close(self):
        """Ends the pin. A pin that already lapsed has nothing to end: no error."""
        if self.grant is not None:
            grant, self.grant = self.grant, None
            lapsed = self._expires_unix_ms / 1000.0 <= time.time()
            try:
                self._client.end_transfer(grant.transfer_id)
            except KvwardenError as e:
                if not (lapsed and e.code == grpc.StatusCode.NOT_FOUND):
                    raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AttachedPool:
    """The tenant's chunks of one CPU pool, mapped from the fds the daemon passes over its
    attach socket: read-only for a decode lease, read-write for prefill/both. Chunks the
    tenant gains later are asked for when a transfer names them. Thread-safe."""

    def __init__(self, client, lease: Lease, pool: str = "main"):
        self._client, self._lease, self.pool = client, lease, pool
        info = client.get_data_plane(pool)
        if not info.attach_socket:
            raise KvwardenError(grpc.StatusCode.FAILED_PRECONDITION,
                                "kvwardend has no attach socket (--attach-socket / data_plane.attach_socket)")
        if info.device.startswith("cuda"):
            raise KvwardenError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"pool '{pool}' is on {info.device}: its chunks come as CUDA IPC handles; "
                                "the Python client maps CPU pools")
        self.page_bytes = info.page_bytes
        self._lock = threading.Lock()
        self._chunks: Dict[int, Tuple[int, mmap.mmap]] = {}  # chunk -> (generation, mapping)
        self.writable = False
        self.attachment_id = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock.settimeout(client.timeout)
        try:
            self._sock.connect(info.attach_socket)
            with self._lock:
                self._refresh_locked()
        except OSError as e:
            self._sock.close()
            raise KvwardenError(grpc.StatusCode.UNAVAILABLE, f"attach socket {info.attach_socket}: {e}") from None

    def _refresh_locked(self):
        req = transfer_pb2.AttachRequest(token=self._client.token, lease_id=self._lease.id, pool=self.pool)
        for c, (gen, _) in self._chunks.items():
            req.known_chunks.add(chunk=c, generation=gen)
        self._sock.send(req.SerializeToString())
        data, fds, _, _ = socket.recv_fds(self._sock, _MAX_RECORD, _FDS_PER_RECORD)
        if not data:
            raise KvwardenError(grpc.StatusCode.UNAVAILABLE, "the daemon closed the attach socket")
        resp = transfer_pb2.AttachResponse.FromString(data)
        try:
            if resp.code != 0:
                raise KvwardenError.from_code(resp.code, resp.message)
            wanted = sum(1 for c in resp.chunks if c.has_fd)
            while len(fds) < wanted:  # continuation records past 200 fds
                _, more, _, _ = socket.recv_fds(self._sock, 1, _FDS_PER_RECORD)
                if not more:
                    raise KvwardenError(grpc.StatusCode.UNAVAILABLE, "attach: fewer fds than chunks")
                fds.extend(more)
            self.attachment_id = resp.attachment_id
            at = 0
            for c in resp.chunks:
                self.writable = c.writable
                prot = mmap.PROT_READ | (mmap.PROT_WRITE if c.writable else 0)
                # Pre-faulted: reads in place run at memory speed from the first one.
                flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
                m = mmap.mmap(fds[at], c.size, flags=flags, prot=prot)
                at += 1
                old = self._chunks.get(c.chunk)
                if old is not None:
                    old[1].close()
                self._chunks[c.chunk] = (c.generation, m)
        finally:
            for fd in fds:
                socket.close(fd)

    def map(self, seq: Sequence, slot_start: int, slot_end: int, mode: str = "read", layer_start: int = 0,
            layer_count: Optional[int] = None, ttl_ms: int = 0) -> PageView:
        """Pins slots [slot_start, slot_end) of the layers (a transfer lease) and returns
        their pages as views. mode "write" needs a prefill (or both) lease."""
        with self._lock:
            known = {c: gen for c, (gen, _) in self._chunks.items()}
        grant = self._client.begin_transfer(self._lease, seq, slot_start, slot_end, mode, layer_start,
                                            layer_count, ttl_ms, known_chunks=known)
        try:
            with self._lock:
                if any(self._chunks.get(c.chunk, (None,))[0] != c.generation for c in grant.chunks):
                    self._refresh_locked()  # chunks gained (or renewed) since the last attach
                pages: Dict[int, List[np.ndarray]] = {}
                for lr in grant.layers:
                    out = pages.setdefault(lr.layer, [])
                    for run in lr.runs:
                        m = self._chunks[run.chunk][1]
                        block = np.frombuffer(m, dtype=np.uint8, count=run.pages * grant.page_bytes,
                                              offset=run.offset)
                        out.extend(block.reshape(run.pages, grant.page_bytes))
            return PageView(self._client, grant, seq, pages)
        except BaseException:
            self._client.end_transfer(grant.transfer_id)
            raise

    def close(self):
        with self._lock:
            for _, m in self._chunks.values():
                try:
                    m.close()
                except BufferError:
                    pass  # a PageView still holds a view: the mapping goes with it
            self._chunks.clear()
            self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

