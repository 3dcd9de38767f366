"""The Python client against a real kvwardend: bytes round trip, errors with the daemon's
codes, the stats stream on the README's Scissorhands example, attach views, admin."""

import time

import grpc
import numpy as np
import pytest

import kvwarden
from kvwarden import HeadStats, KvwardenError, Policy


@pytest.fixture
def alpha(daemon):
    with kvwarden.Client(daemon.target, "alpha-token") as c:
        yield c


def pattern(layout, layers, tokens, first, salt):
    """Distinct values per (layer, head, position, dim), exact in fp16."""
    shape = (layers, layout.num_kv_heads, tokens, layout.head_dim)
    idx = np.indices(shape)
    vals = (idx[0] * 7 + idx[1] * 3 + (idx[2] + first) * 5 + idx[3] + salt) % 2048
    return vals.astype(np.float16)


def test_write_then_read_round_trips_exactly(alpha):
    lease = alpha.register_worker("py", role="both")
    seq = alpha.create_sequence(lease, "main", 300)
    assert seq.layout.num_layers == 4 and seq.layout.dtype == "fp16"
    r = alpha.reserve_slots(seq, 300)
    assert (r.first_position, r.num_tokens) == (0, 300)
    k = pattern(seq.layout, 4, 300, 0, 1)
    v = pattern(seq.layout, 4, 300, 0, 2)
    assert alpha.write_kv(seq, k, v, token_start=0) == k.nbytes + v.nbytes
    layers = alpha.read_kv(seq)
    assert [l.layer for l in layers] == [0, 1, 2, 3]
    for layer in layers:
        got_k, got_v = layer.dense()
        np.testing.assert_array_equal(got_k, k[layer.layer])
        np.testing.assert_array_equal(got_v, v[layer.layer])
        assert all(np.array_equal(p, np.arange(300)) for p in layer.positions)
    part = alpha.read_kv(seq, layer_start=2, layer_count=1, token_start=10, token_end=20)
    np.testing.assert_array_equal(part[0].dense()[0], k[2, :, 10:20])
    info = alpha.describe_sequence(seq)
    assert info.num_tokens == 300 and info.policy == "full"
    fork = alpha.fork_sequence(seq, lease)
    np.testing.assert_array_equal(alpha.read_kv(fork)[1].dense()[0], k[1])
    assert alpha.release_sequence(fork) >= 0
    assert alpha.release_sequence(seq) > 0


def test_refusals_raise_the_daemons_code_and_message(alpha, daemon):
    lease = alpha.register_worker("py-errors")
    seq = alpha.create_sequence(lease, "main", 8)
    with pytest.raises(KvwardenError) as e:
        alpha.reserve_slots(seq, 9)
    assert e.value.code == grpc.StatusCode.OUT_OF_RANGE and "max_tokens 8" in e.value.message
    with pytest.raises(KvwardenError) as e:
        alpha.create_sequence(lease, "no-such-pool", 8)
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ValueError):  # wrong dtype is caught before the wire
        alpha.write_kv(seq, np.zeros((1, 2, 1, 16), np.float32), np.zeros((1, 2, 1, 16), np.float32), 0)
    with kvwarden.Client(daemon.target, "beta-token") as beta:
        with pytest.raises(KvwardenError) as e:  # another tenant's sequence is not there
            beta.describe_sequence(seq)
        assert e.value.code == grpc.StatusCode.NOT_FOUND
    with kvwarden.Client(daemon.target, "wrong-token") as nobody:
        with pytest.raises(KvwardenError) as e:
            nobody.register_worker("w", keep_alive=False)
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_keep_alive_thread_holds_a_short_lease(alpha):
    lease = alpha.register_worker("py-short", ttl_ms=300)
    seq = alpha.create_sequence(lease, "main", 8)
    time.sleep(1.2)  # four TTLs: alive only because the thread renews it
    assert alpha.describe_sequence(seq).sequence_id == seq.id
    alpha.stop_keep_alive(lease)
    deadline = time.time() + 3
    while time.time() < deadline:
        try:
            alpha.describe_sequence(seq)
            time.sleep(0.05)
        except KvwardenError as e:
            assert e.code == grpc.StatusCode.NOT_FOUND
            break
    else:
        pytest.fail("the sequence outlived its lease")


def test_release_lease_frees_its_sequences_at_once(alpha):
    lease = alpha.register_worker("py-exit", ttl_ms=60000)
    seqs = [alpha.create_sequence(lease, "main", 16) for _ in range(2)]
    for s in seqs:
        alpha.reserve_slots(s, 16)
    assert alpha.release_lease(lease) == 2
    for s in seqs:
        with pytest.raises(KvwardenError) as e:
            alpha.describe_sequence(s)
        assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_scissorhands_hand_worked_example_over_the_stats_stream(alpha):
    # README, "Retention policies": B=6, w=3, r=2, m=3; three steps; every head evicts 1, 3, 4.
    lease = alpha.register_worker("py-stats", role="decode")
    seq = alpha.create_sequence(lease, "main", 100, Policy.scissorhands(6, window=3, recent=2, drop=3))
    steps = [(5, [0, 2, 4]), (6, [0, 2, 5]), (7, [0, 2, 6])]
    reserved, update = 0, None
    with alpha.stats_stream() as stream:
        for attended, listed in steps:
            r = alpha.reserve_slots(seq, attended - reserved)
            n = attended - reserved
            alpha.write_kv(seq, pattern(seq.layout, 4, n, reserved, 3), pattern(seq.layout, 4, n, reserved, 4),
                           token_start=reserved)
            reserved = attended
            step = [HeadStats(layer, head, attended, listed=np.array(listed)) for layer in range(4) for head in range(2)]
            update = stream.send_steps(seq, 0 if update is None else update.epoch, [step])
    assert update.epoch == 1 and len(update.heads) == 8
    for h in update.heads:
        assert h.evicted_positions.tolist() == [1, 3, 4] and h.live_slots == 4
    layers = alpha.read_kv(seq, epoch=1)
    k_written = pattern(seq.layout, 4, 7, 0, 3)
    for layer in layers:
        for head in range(2):
            assert layer.positions[head].tolist() == [0, 2, 5, 6]
            np.testing.assert_array_equal(layer.k[head], k_written[layer.layer, head, [0, 2, 5, 6]])
    info = alpha.describe_sequence(seq)
    assert info.decode_steps == 3 and info.layers[2].heads[1].evicted == 3
    # A stale epoch ends the stream with the daemon's code.
    with alpha.stats_stream() as stream:
        with pytest.raises(KvwardenError) as e:
            stream.send_steps(seq, 7, [[HeadStats(l, h, 4, listed=np.array([0])) for l in range(4) for h in range(2)]])
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_attached_pages_are_the_daemons_bytes_without_a_copy(alpha):
    lease = alpha.register_worker("py-attach", role="both")
    seq = alpha.create_sequence(lease, "main", 64)
    alpha.reserve_slots(seq, 40)
    k = pattern(seq.layout, 4, 40, 0, 5)
    v = pattern(seq.layout, 4, 40, 0, 6)
    alpha.write_kv(seq, k, v, token_start=0)
    with alpha.attach(lease) as pool, pool.map(seq, 0, 40) as view:
        assert pool.writable
        for layer in range(4):
            for head in range(2):
                for slot in (0, 1, 17, 39):
                    np.testing.assert_array_equal(view.k(layer, head, slot), k[layer, head, slot])
                    np.testing.assert_array_equal(view.v(layer, head, slot), v[layer, head, slot])
        # In place: a write through a prefill/both lease's view is what ReadKV then returns.
        with pool.map(seq, 0, 4, mode="write", layer_count=1) as w:
            w.k(0, 1, 2)[:] = np.float16(-1.5)
        assert (alpha.read_kv(seq, 0, 1, 2, 3)[0].k[1] == np.float16(-1.5)).all()


def test_admin_token_lists_metadata(daemon, alpha):
    alpha.register_worker("py-admin")
    with kvwarden.Client(daemon.target, "test-admin") as admin:
        pools = admin.list_pools()
        assert pools.pools[0].name == "main" and pools.open_fds > 0
        assert {t.name for t in admin.list_tenants().tenants} == {"alpha", "beta"}
        assert all(s.tenant == "alpha" for s in admin.list_sequences(tenant="alpha"))
        with pytest.raises(KvwardenError) as e:  # operators see metadata, not KV bytes
            admin.register_worker("not-a-tenant")
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_streaming_reservation_says_what_it_evicted(alpha):
    lease = alpha.register_worker("py-streaming", role="both")
    seq = alpha.create_sequence(lease, "main", 64, Policy.streaming(6, 2))
    assert alpha.reserve_slots(seq, 6).evicted == []
    r = alpha.reserve_slots(seq, 3)  # 9 > 6: keep 0, 1 and the newest 4 (3 of them new)
    assert r.epoch == 1 and len(r.evicted) == 4 * 2
    for h in r.evicted:
        assert h.evicted_positions.tolist() == [2, 3, 4] and h.live_slots == 3


def test_a_dead_daemon_raises_promptly(tmp_path):
    import os
    from conftest import Daemon
    d = Daemon(str(tmp_path))
    with kvwarden.Client(d.target, "alpha-token", timeout=2.0) as c:
        lease = c.register_worker("py-dead", keep_alive=False)
        seq = c.create_sequence(lease, "main", 16)
        stream = c.stats_stream()
        os.kill(d.proc.pid, 9)
        d.proc.wait()
        for call in (c.ping, lambda: c.reserve_slots(seq, 1), lambda: c.read_kv(seq),
                     lambda: stream.send_steps(seq, 0, [[]])):
            t0 = time.monotonic()
            with pytest.raises(KvwardenError) as e:
                call()
            assert e.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                    grpc.StatusCode.CANCELLED), e.value
            assert time.monotonic() - t0 < 3.0
    d.stop()


def test_the_client_package_does_not_need_torch():
    """`kvwarden` is the client (grpcio, protobuf, numpy); torch belongs to kvwarden.harness."""
    import subprocess
    import sys
    code = ("import sys; import kvwarden, kvwarden.bench, kvwarden.spawn; "
            "bad = sorted(m for m in ('torch', 'matplotlib') if m in sys.modules); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_clean_exit_releases_the_leases_it_kept_alive(daemon):
    """Leaving `with Client` is a clean exit: its kept-alive leases and their sequences
    go at once (a release, not a lapse); a lease whose keep-alive was stopped is left to
    its TTL."""
    with kvwarden.Client(daemon.target, "alpha-token") as c:
        lease = c.register_worker("py-clean-exit")
        seq = c.create_sequence(lease, "main", 64)
        kept = c.register_worker("py-left-to-lapse", ttl_ms=60000)
        c.stop_keep_alive(kept)
    with kvwarden.Client(daemon.target, "test-admin") as admin:
        workers = {w.name for w in admin.list_workers().workers}
        assert "py-clean-exit" not in workers and "py-left-to-lapse" in workers
        assert seq.id not in {s.sequence_id for s in admin.list_sequences(tenant="alpha")}


def test_a_view_past_its_pin_says_so_and_closes_quietly(alpha):
    lease = alpha.register_worker("py-attach-ttl", role="both")
    seq = alpha.create_sequence(lease, "main", 64)
    alpha.reserve_slots(seq, 8)
    with alpha.attach(lease) as pool:
        with pool.map(seq, 0, 8, ttl_ms=300) as view:
            assert 0 < view.expires_in() <= 0.3
            view.k(0, 0, 0)
            time.sleep(0.5)
            assert view.expires_in() == 0
            with pytest.raises(KvwardenError) as e:
                view.k(0, 0, 0)
            assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "expired" in e.value.message
        # Leaving the block after the pin lapsed raised nothing; a closed view says so.
        with pytest.raises(KvwardenError) as e:
            view.page(0, 0)
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
