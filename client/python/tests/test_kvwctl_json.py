"""kvwctl --json against a real kvwardend, one schema per command: every command prints
JSON that parses (one object per line for the streaming ones), with its fields by proto
name and 64-bit counts as JSON numbers, and no token anywhere."""

import json
import os
import subprocess

import pytest

import kvwarden

INT = int
STR = str
BOOL = bool

# command -> (top-level key holding a list, or None) and {field: type} of each entry.
SCHEMAS = {
    ("pools",): ("pools", {"name": STR, "device": STR, "capacity_pages": INT, "used_pages": INT,
                           "free_pages": INT, "page_bytes": INT, "draining": BOOL}),
    ("tenants",): ("tenants", {"name": STR, "source": STR, "quota_pages": INT, "quota_bytes": INT,
                               "used_pages": INT, "used_bytes": INT, "sequences": INT, "removed": BOOL}),
    ("workers",): ("workers", {"lease_id": INT, "tenant": STR, "name": STR, "ttl_ms": INT}),
    ("transfers",): ("transfers", {}),
    ("attached",): ("attachments", {}),
    ("seqs",): ("sequences", {"sequence_id": INT, "tenant": STR, "pool": STR, "epoch": INT}),
}


def kvwctl(daemon, *args):
    r = subprocess.run([os.path.join(os.environ["KVW_BIN_DIR"], "kvwctl"), "--target", daemon.target,
                        "--token", "test-admin", "--json", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (args, r.stderr)
    for secret in ("alpha-token", "beta-token", "test-admin"):
        assert secret not in r.stdout, (args, secret)
    return r.stdout


def check(entry, fields, where):
    for name, kind in fields.items():
        assert name in entry, f"{where}: no {name} in {entry}"
        assert isinstance(entry[name], kind) and not (kind is INT and isinstance(entry[name], bool)), \
            f"{where}.{name} = {entry[name]!r} is not {kind.__name__}"


@pytest.fixture(scope="module")
def busy(daemon):
    """A worker with a sequence holding pages, so every list has an entry."""
    with kvwarden.Client(daemon.target, "alpha-token") as c:
        lease = c.register_worker("json-worker", role="both")
        seq = c.create_sequence(lease, "main", 64)
        c.reserve_slots(seq, 16)
        yield seq


@pytest.mark.parametrize("command", list(SCHEMAS))
def test_list_commands(daemon, busy, command):
    key, fields = SCHEMAS[command]
    doc = json.loads(kvwctl(daemon, *command))
    assert isinstance(doc[key] if key in doc else [], list)
    for i, entry in enumerate(doc.get(key, [])):
        check(entry, fields, f"{command[0]}[{i}]")
    if command == ("seqs",):
        assert any(e["sequence_id"] == busy.id for e in doc["sequences"])


def test_show_watch_health_config_top(daemon, busy):
    show = json.loads(kvwctl(daemon, "seq", "show", str(busy.id)))
    check(show, {"sequence_id": INT, "epoch": INT, "num_tokens": INT, "pages_held": INT, "layers": list}, "seq show")
    assert show["sequence_id"] == busy.id
    check(show["layers"][0]["heads"][0], {"live_slots": INT, "budget": INT, "evicted": INT}, "seq show head")
    lines = kvwctl(daemon, "seq", "watch", str(busy.id), "--count=3", "--interval-ms=10").splitlines()
    assert len(lines) == 3 and all(json.loads(l)["sequence_id"] == busy.id for l in lines)
    health = json.loads(kvwctl(daemon, "health"))
    check(health, {"status": STR, "version": STR, "uptime_ms": INT, "rtt_us": INT}, "health")
    config = json.loads(kvwctl(daemon, "config"))
    check(config, {"path": STR, "config": dict}, "config")
    assert config["config"]["pools"][0]["name"] == "main"
    assert config["config"]["tenants"][0]["token"] == "<redacted>"
    top = [json.loads(l) for l in kvwctl(daemon, "top", "--count=2", "--interval-ms=20").splitlines()]
    assert len(top) == 2
    check(top[0]["tenants"][0], {"tenant": STR, "used_pages": INT, "used_bytes": INT, "quota_pages": INT,
                                 "quota_bytes": INT, "sequences": INT}, "top tenants")
    check(top[0]["pools"][0], {"pool": STR, "used_pages": INT, "capacity_pages": INT, "draining": BOOL}, "top pools")
