"""StatsStream: attention statistics to the daemon, retention updates back."""

import queue
from typing import Iterable, List, Sequence as Seq

import grpc
import numpy as np

from kvwarden.errors import KvwardenError
from kvwarden.types import HeadStats, RetentionUpdate, Sequence
from kvwarden.v1 import control_pb2

_END = object()


class StatsStream:
    """One StreamStats stream: each send is answered by one RetentionUpdate (the new
    epoch and, per (layer, head) that changed, the evicted positions). A refused message
    ends the stream with KvwardenError; open a new one to go on. Not thread-safe: one
    sender at a time. Use as a context manager, or call close()."""

    def __init__(self, client):
        self._outbox: "queue.Queue" = queue.Queue()
        self._closed = False
        requests = iter(self._outbox.get, _END)
        self._responses = client.control.StreamStats(requests, metadata=client.metadata)

    def _exchange(self, msg: control_pb2.StatsMessage) -> RetentionUpdate:
        if self._closed:
            raise KvwardenError(grpc.StatusCode.FAILED_PRECONDITION, "the stats stream is closed")
        self._outbox.put(msg)
        try:
            return RetentionUpdate.from_proto(next(self._responses))
        except grpc.RpcError as e:
            self._closed = True
            raise KvwardenError.from_rpc(e) from None
        except StopIteration:
            self._closed = True
            raise KvwardenError(grpc.StatusCode.UNAVAILABLE, "the daemon ended the stats stream") from None

    def send_steps(self, seq: Sequence, epoch: int, steps: Iterable[Iterable[HeadStats]]) -> RetentionUpdate:
        """Scissorhands decode steps for `seq` at `epoch` (or the one before, remapped by
        the daemon): each step lists every (layer, head) once."""
        msg = control_pb2.StatsMessage(sequence_id=seq.id, epoch=epoch)
        for step in steps:
            msg.steps.add().heads.extend(h.to_proto() for h in step)
        return self._exchange(msg)

    def send_window_scores(self, seq: Sequence, epoch: int, scores: Seq) -> RetentionUpdate:
        """WindowKV at the end of prefill: (group leader layer, sums [heads, candidates])."""
        msg = control_pb2.StatsMessage(sequence_id=seq.id, epoch=epoch)
        for layer, sums in scores:
            msg.window_scores.add(layer=layer, sums=np.asarray(sums, dtype=np.float32).ravel().tolist())
        return self._exchange(msg)

    def close(self):
        """Half-closes and waits for the daemon's end of the stream."""
        if self._closed:
            return
        self._closed = True
        self._outbox.put(_END)
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError as e:
            raise KvwardenError.from_rpc(e) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
