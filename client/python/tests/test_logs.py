"""kvwardend's log: one structured line per event (JSON or key=value), none per RPC at the
default level, repeated quota refusals throttled, the level flag obeyed, no token ever."""

import json
import re
import tempfile
import time

import grpc
import pytest

import kvwarden
from conftest import CONFIG, Daemon
from kvwarden import KvwardenError

_TEXT_LINE = re.compile(r'^ts=\S+Z level=(debug|info|warning|error) event=[a-z_]+( [a-z_]+=("([^"\\]|\\.)*"|[^ "]+))*$')


def workload(d: Daemon):
    with kvwarden.Client(d.target, "alpha-token") as alpha, kvwarden.Client(d.target, "beta-token") as beta:
        lease = alpha.register_worker("logs", "both")
        seq = alpha.create_sequence(lease, "main", 64)
        for _ in range(200):  # RPCs are not events
            alpha.ping()
        bl = beta.register_worker("logs-beta")
        bs = beta.create_sequence(bl, "main", 100000)
        for _ in range(30):
            with pytest.raises(KvwardenError) as e:
                beta.reserve_slots(bs, 100000)
            assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        with alpha.attach(lease):
            pass
        short = alpha.register_worker("logs-lapse", ttl_ms=200, keep_alive=False)
        alpha.create_sequence(short, "main", 16)
        time.sleep(1.5)  # the lease lapses; the attach socket notices its closed peer
        alpha.release_lease(lease)


def test_json_lines_one_per_event():
    with tempfile.TemporaryDirectory(prefix="kvw-logs-") as d:
        daemon = Daemon(d, CONFIG, extra_args=["--log-format", "json"])
        workload(daemon)
        daemon.stop()
        lines = open(daemon.log_path).read().splitlines()
    events = []
    for line in lines:
        obj = json.loads(line)  # every line is one JSON object
        assert {"ts", "level", "event"} <= obj.keys(), obj
        events.append(obj)
    names = [e["event"] for e in events]
    for wanted in ("pool_ready", "attach_listening", "start", "lease_lapsed", "quota_refused", "attach_opened",
                   "attach_closed", "stop"):
        assert wanted in names, (wanted, names)
    start = events[names.index("start")]
    assert start["tenants"] == 2 and start["listen"] == daemon.target and "token" not in json.dumps(start)
    # 30 refusals in a few ms: one line, which counts them.
    refused = [e for e in events if e["event"] == "quota_refused"]
    assert len(refused) == 1 and refused[0]["tenant"] == "beta" and refused[0]["refusals_total"] == 1
    lapsed = events[names.index("lease_lapsed")]
    assert lapsed["tenant"] == "alpha" and lapsed["worker"] == "logs-lapse" and lapsed["sequences_released"] == 1
    # ~240 RPCs, a dozen lines: nothing per call at info.
    assert len(lines) < 20, lines
    assert not any("alpha-token" in l or "beta-token" in l or "test-admin" in l for l in lines)


def test_text_lines_parse_and_the_level_flag_filters():
    with tempfile.TemporaryDirectory(prefix="kvw-logs-") as d:
        daemon = Daemon(d, CONFIG)
        workload(daemon)
        daemon.stop()
        lines = open(daemon.log_path).read().splitlines()
    assert lines and all(_TEXT_LINE.match(l) for l in lines), [l for l in lines if not _TEXT_LINE.match(l)]
    assert any("event=lease_lapsed" in l and "tenant=alpha" in l for l in lines)
    with tempfile.TemporaryDirectory(prefix="kvw-logs-") as d:
        daemon = Daemon(d, CONFIG, extra_args=["--log-level", "warning"])
        workload(daemon)
        daemon.stop()
        quiet = open(daemon.log_path).read().splitlines()
    assert not any("level=info" in l for l in quiet), quiet
