"""kvwardend --metrics: /metrics against what the admin listings say, after a workload
that evicts (Scissorhands stats, streaming reserve), is refused for quota, releases,
lapses a lease and calls a method that does not exist."""

import re
import tempfile
import time
import urllib.request

import grpc
import numpy as np
import pytest

import kvwarden
from conftest import CONFIG, Daemon
from kvwarden import HeadStats, KvwardenError, Policy

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(address: str):
    """{(name, frozenset of (label, value))): value} of one GET /metrics."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[(m.group(1), frozenset(_LABEL.findall(m.group(2) or "")))] = float(m.group(3))
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def metrics_daemon():
    with tempfile.TemporaryDirectory(prefix="kvw-metrics-") as d:
        daemon = Daemon(d, CONFIG, extra_args=["--metrics", "127.0.0.1:0"])
        try:
            yield daemon
        finally:
            daemon.stop()


def test_metrics_match_the_listings_after_a_workload(metrics_daemon):
    d = metrics_daemon
    with kvwarden.Client(d.target, "alpha-token") as alpha, kvwarden.Client(d.target, "beta-token") as beta, \
            kvwarden.Client(d.target, "test-admin") as admin:
        address = admin.list_pools().metrics_address
        assert re.fullmatch(r"127\.0\.0\.1:\d+", address), address
        lease = alpha.register_worker("metrics", "both")
        # Scissorhands B=6 r=2 m=3: seven steps that list nothing make every old slot low.
        seq = alpha.create_sequence(lease, "main", 64, Policy.scissorhands(6, window=3, recent=2, drop=3))
        lay = seq.layout
        alpha.reserve_slots(seq, 7)
        k = np.ones((lay.num_layers, lay.num_kv_heads, 7, lay.head_dim), np.float16)
        written = alpha.write_kv(seq, k, k, 0)
        with alpha.stats_stream() as s:
            step = [HeadStats(l, h, 7, listed=[]) for l in range(lay.num_layers) for h in range(lay.num_kv_heads)]
            update = s.send_steps(seq, 0, [step])
        evicted = sum(len(h.evicted_positions) for h in update.heads)
        assert evicted == 3 * lay.num_layers * lay.num_kv_heads
        # Streaming: the second reservation drops 2 of each head.
        st = alpha.create_sequence(lease, "main", 64, Policy.streaming(6, 2))
        alpha.reserve_slots(st, 6)
        alpha.reserve_slots(st, 2)
        # Quota: beta holds 64 pages at most.
        bl = beta.register_worker("metrics-beta")
        bs = beta.create_sequence(bl, "main", 100000)
        with pytest.raises(KvwardenError) as e:
            beta.reserve_slots(bs, 100000)
        assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        # A released full sequence, and a lease left to lapse with one sequence.
        full = alpha.create_sequence(lease, "main", 16)
        alpha.reserve_slots(full, 4)
        alpha.release_sequence(full)
        short = alpha.register_worker("metrics-lapse", ttl_ms=200, keep_alive=False)
        alpha.create_sequence(short, "main", 16)
        # A method the daemon does not have: counted as "other", never by its name.
        bogus = grpc.insecure_channel(d.target).unary_unary("/kvwarden.v1.ControlService/NoSuchMethod-12345")
        with pytest.raises(grpc.RpcError):
            bogus(b"", timeout=5)
        time.sleep(0.6)  # the lease lapses and the reaper (20 ms) collects it

        samples = scrape(address)
        pools, tenants = admin.list_pools(), {t.name: t for t in admin.list_tenants().tenants}
        assert value(samples, "kvwarden_pool_used_pages", pool="main") == pools.pools[0].used_pages > 0
        assert value(samples, "kvwarden_pool_capacity_pages", pool="main") == pools.pools[0].capacity_pages
        assert value(samples, "kvwarden_tenant_used_pages", tenant="alpha") == tenants["alpha"].used_pages
        assert value(samples, "kvwarden_tenant_quota_pages", tenant="beta") == 64
        assert value(samples, "kvwarden_tenant_quota_refusals_total", tenant="beta") == 1 == tenants["beta"].quota_refusals
        assert value(samples, "kvwarden_tenant_sequences", tenant="alpha") == tenants["alpha"].sequences == 2
        assert value(samples, "kvwarden_rpc_duration_seconds_count",
                     method="/kvwarden.v1.ControlService/ReserveSlots", code="RESOURCE_EXHAUSTED") == 1
        assert value(samples, "kvwarden_rpc_duration_seconds_count",
                     method="/kvwarden.v1.ControlService/ReserveSlots", code="OK") == 4
        assert value(samples, "kvwarden_rpc_duration_seconds_count", method="other", code="UNIMPLEMENTED") == 1
        assert value(samples, "kvwarden_retention_compressions_total", policy="scissorhands", cause="stats") == 1
        assert value(samples, "kvwarden_retention_evicted_tokens_total", policy="scissorhands", cause="stats") == evicted
        assert value(samples, "kvwarden_token_lifetime_seconds_count", policy="scissorhands") == evicted
        assert value(samples, "kvwarden_retention_compressions_total", policy="streaming", cause="reserve") == 1
        assert value(samples, "kvwarden_retention_evicted_tokens_total", policy="streaming", cause="reserve") == \
            2 * lay.num_layers * lay.num_kv_heads
        assert value(samples, "kvwarden_stats_messages_total") == 1
        assert value(samples, "kvwarden_kv_bytes_total", transport="grpc", direction="write") == written
        assert value(samples, "kvwarden_sequence_lifetime_seconds_count", policy="full", end="released") == 1
        assert value(samples, "kvwarden_sequence_lifetime_seconds_count", policy="full", end="lease_ended") == 1
        assert value(samples, "kvwarden_lease_lapses_total") == 1
        assert value(samples, "kvwarden_process_open_fds") == pools.open_fds or value(samples, "kvwarden_process_open_fds") > 0
        assert value(samples, "kvwarden_process_threads") > 1
        # Bounded labels: no sequence id, no method name a client made up.
        for (name, labels) in samples:
            for label, v in labels:
                assert label in ("pool", "tenant", "policy", "cause", "method", "code", "end", "mode", "how",
                                 "transport", "direction", "state", "version", "le", "quantile"), (name, label)
                assert "NoSuchMethod" not in v and str(seq.id) not in v
        alpha.release_lease(lease)
