"""Cluster mode from Python: a real etcd and two kvwardends (started here, stopped by
pid); a sequence written on node A is named, resolved from node B, migrated there and
read back byte for byte."""

import contextlib
import os
import socket
import subprocess
import tempfile
import time

import grpc
import numpy as np
import pytest

import kvwarden
from conftest import CONFIG, Daemon
from kvwarden.spawn import stop_process

ETCD = "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def etcd_member(d, scheme="http", extra=()):
    """One etcd member on free loopback ports, its data and log in `d`, stopped by pid:
    yields its client endpoint. `scheme` and `extra` flags serve its client API (https:
    with the TLS flags in `extra`)."""
    client_port, peer_port = free_port(), free_port()
    endpoint = f"127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    with open(os.path.join(d, "etcd.log"), "w") as log:
        etcd = subprocess.Popen(
            [ETCD, "--data-dir", os.path.join(d, "etcd"), "--listen-client-urls", f"{scheme}://{endpoint}",
             "--advertise-client-urls", f"{scheme}://{endpoint}", "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", f"default={peer}", *extra],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            yield endpoint
        finally:
            stop_process(etcd)


@pytest.fixture(scope="module")
def cluster():
    if not os.path.exists(ETCD):
        pytest.skip("etcd-server is not installed")
    with tempfile.TemporaryDirectory(prefix="kvw-py-cluster-") as d, etcd_member(d) as endpoint:
        nodes = []
        try:
            config = CONFIG + ' cluster { lease_ttl_s: 3 peer_token: "py-peer-secret" }'
            for name in ("py-a", "py-b"):
                workdir = os.path.join(d, name)
                os.mkdir(workdir)
                nodes.append(Daemon(workdir, config, extra_args=[f"--cluster=etcd://{endpoint}", f"--node={name}"]))
            yield nodes
        finally:
            for n in nodes:
                n.stop()


def wait_for(fn, timeout=10.0):
    deadline = time.time() + timeout
    while True:
        try:
            return fn()
        except kvwarden.KvwardenError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def test_handle_and_migration(cluster):
    a, b = cluster
    with kvwarden.Client(a.target, token="alpha-token") as ca, kvwarden.Client(b.target, token="alpha-token") as cb:
        lease = ca.register_worker("prefill", role="prefill")
        seq = ca.create_sequence(lease, pool="main", max_tokens=64)
        ca.reserve_slots(seq, 8)
        rng = np.random.default_rng(7)
        k = rng.standard_normal((4, 2, 8, 16)).astype(np.float16)
        v = rng.standard_normal((4, 2, 8, 16)).astype(np.float16)
        ca.write_kv(seq, k, v, token_start=0)
        # Publishing needs the node's etcd lease: it may take a moment after start.
        h = wait_for(lambda: ca.publish_handle(seq, "py-req-1"))
        assert (h.node, h.sequence_id) == ("py-a", seq.id)
        found = cb.resolve_handle("py-req-1")
        assert (found.node, found.grpc_address, found.sequence_id) == ("py-a", a.target, seq.id)

        moved = ca.migrate_sequence(seq, "py-b")
        assert moved.node == "py-b" and moved.grpc_address == b.target
        assert moved.bytes_moved == 4 * 2 * 512  # 4 layers x 2 pages of 512 bytes
        with pytest.raises(kvwarden.KvwardenError) as gone:
            ca.describe_sequence(seq)
        assert gone.value.code.name == "NOT_FOUND"
        there = cb.resolve_handle("py-req-1")
        assert (there.node, there.sequence_id) == ("py-b", moved.sequence_id)

        remote = kvwarden.Sequence(moved.sequence_id, seq.layout, "main")
        kv = cb.read_kv(remote)
        for layer in range(4):
            got_k, got_v = kv[layer].dense()
            np.testing.assert_array_equal(got_k, k[layer])
            np.testing.assert_array_equal(got_v, v[layer])

        with pytest.raises(kvwarden.KvwardenError) as bad:
            cb.migrate_sequence(remote, "py-b")
        assert bad.value.code.name == "INVALID_ARGUMENT"


def test_cluster_client_places_and_resolves(cluster):
    a, b = cluster

    def both_listed(cc):
        nodes = cc.nodes()
        if len(nodes) != 2:
            raise kvwarden.KvwardenError(grpc.StatusCode.UNAVAILABLE, "not both listed yet")
        return nodes

    with kvwarden.ClusterClient([a.target, b.target], token="alpha-token") as cc:
        nodes = wait_for(lambda: both_listed(cc))
        assert [n.node for n in nodes] == ["py-a", "py-b"]
        assert nodes[1].grpc_address == b.target
        assert nodes[0].pools[0].name == "main" and nodes[0].pools[0].layout.num_layers == 4
        assert cc.local_node() == "py-a"
        assert cc.place("main", pages=4).node == "py-a"  # this worker's node first
        with pytest.raises(kvwarden.KvwardenError) as e:
            cc.place("nope")
        assert e.value.code.name == "NOT_FOUND"
        with pytest.raises(kvwarden.KvwardenError) as e:
            cc.place("main", pages=1 << 40)
        assert e.value.code.name == "RESOURCE_EXHAUSTED"

        cb = cc.on("py-b")
        lease = cb.register_worker("prefill-b", role="prefill")
        seq = cb.create_sequence(lease, pool="main", max_tokens=64)
        cb.reserve_slots(seq, 4)
        wait_for(lambda: cb.publish_handle(seq, "py-req-2"))
        # Resolved through py-a (the first seed): a Client of py-b comes back.
        h, holder = cc.resolve("py-req-2")
        assert (h.node, h.sequence_id) == ("py-b", seq.id)
        assert holder.target == b.target
        assert holder.describe_sequence(seq).sequence_id == seq.id
