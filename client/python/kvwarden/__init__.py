"""kvwarden: the Python client of kvwardend, the KV-cache memory manager daemon.

    import kvwarden
    with kvwarden.Client("127.0.0.1:50051", token="alpha-token") as c:
        lease = c.register_worker("w0", role="both")        # kept alive by a thread
        seq = c.create_sequence(lease, pool="main", max_tokens=4096,
                                policy=kvwarden.Policy.scissorhands(budget=256))
        c.reserve_slots(seq, 128)
        c.write_kv(seq, k, v)                               # NumPy [layers, heads, tokens, dim]
        kv = c.read_kv(seq)                                 # per layer, per head, with positions
        with c.stats_stream() as s:
            update = s.send_steps(seq, epoch, [step])       # evictions and the new epoch

Every failure raises KvwardenError with the gRPC code and the daemon's message.
The generated protobuf modules (kvwarden.v1.*_pb2) come from proto/ through the build
(CMake) or `pip install client/python`; they may live in another directory named
kvwarden on sys.path.
"""

import pkgutil

# The generated kvwarden.v1 modules may sit in another "kvwarden" directory (the build's).
__path__ = pkgutil.extend_path(__path__, __name__)  # noqa: F821

from kvwarden.errors import KvwardenError  # noqa: E402
from kvwarden.types import (  # noqa: E402
    Handle,
    HeadRetention,
    HeadStats,
    LayerKV,
    Layout,
    Lease,
    Migration,
    NodeInfo,
    NodePool,
    Policy,
    Reservation,
    RetentionUpdate,
    Sequence,
)
from kvwarden.client import Client, tls_credentials  # noqa: E402
from kvwarden.cluster import ClusterClient  # noqa: E402
from kvwarden.stats import StatsStream  # noqa: E402
from kvwarden.attach import AttachedPool, PageView  # noqa: E402

__all__ = [
    "AttachedPool",
    "Client",
    "ClusterClient",
    "Handle",
    "HeadRetention",
    "HeadStats",
    "KvwardenError",
    "LayerKV",
    "Layout",
    "Lease",
    "Migration",
    "NodeInfo",
    "NodePool",
    "PageView",
    "Policy",
    "Reservation",
    "RetentionUpdate",
    "Sequence",
    "StatsStream",
    "tls_credentials",
]
