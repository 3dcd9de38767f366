"""Cluster mode with TLS to etcd: a real etcd serving only TLS with client-certificate
authentication (certificates made here with Debian's openssl), a kvwardend configured with
cluster.etcd_tls registers and follows fleet-wide tenants through it, kvwctl reaches it with
--etcd-ca/--etcd-cert/--etcd-key, and a client without TLS or without a certificate does not."""

import os
import shutil
import subprocess
import tempfile
import time

import pytest

import kvwarden
from conftest import CONFIG, Daemon
from test_cluster import ETCD, etcd_member

if shutil.which("openssl") is None or not os.path.exists(ETCD):
    pytest.skip("needs openssl and etcd-server", allow_module_level=True)

from test_tls import make_pki  # noqa: E402


def kvwctl(*args):
    return subprocess.run([os.path.join(os.environ["KVW_BIN_DIR"], "kvwctl"), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def tls_etcd():
    with tempfile.TemporaryDirectory(prefix="kvw-etcd-tls-") as d:
        make_pki(d)
        tls = ["--cert-file", f"{d}/server.pem", "--key-file", f"{d}/server.key",
               "--trusted-ca-file", f"{d}/ca.pem", "--client-cert-auth"]
        with etcd_member(d, "https", tls) as endpoint:
            yield d, endpoint


def tls_args(pki):
    return [f"--etcd-ca={pki}/ca.pem", f"--etcd-cert={pki}/client.pem", f"--etcd-key={pki}/client.key"]


def test_a_node_registers_and_follows_tenants_over_tls(tls_etcd):
    pki, endpoint = tls_etcd
    cluster = f"--cluster=etcd://{endpoint}"
    with tempfile.TemporaryDirectory(prefix="kvw-py-tls-node-") as work:
        etcd_tls = (f'cluster {{ lease_ttl_s: 3 etcd_tls {{ ca_file: "{pki}/ca.pem" '
                    f'cert_file: "{pki}/client.pem" key_file: "{pki}/client.key" }} }}')
        node = Daemon(work, CONFIG + etcd_tls, extra_args=[cluster, "--node=tls-a"])
        try:
            deadline = time.time() + 20
            r = kvwctl(cluster, *tls_args(pki), "cluster")
            while "tls-a" not in r.stdout and time.time() < deadline:
                time.sleep(0.1)
                r = kvwctl(cluster, *tls_args(pki), "cluster")
            assert r.returncode == 0, r.stderr
            assert "tls-a" in r.stdout and node.target in r.stdout

            # A fleet-wide tenant written over TLS reaches the node.
            token_file = os.path.join(work, "tls.token")
            with open(token_file, "w") as f:
                f.write("tls-tenant-token\n")
            r = kvwctl(cluster, *tls_args(pki), "tenants", "set", "tls-t", "--token-file", token_file,
                       "--quota-pages", "16")
            assert r.returncode == 0, r.stderr
            deadline = time.time() + 10
            while True:
                try:
                    with kvwarden.Client(node.target, "tls-tenant-token") as c:
                        c.register_worker("w", keep_alive=False)
                    break
                except kvwarden.KvwardenError:
                    assert time.time() < deadline, "the fleet-wide tenant never reached the node"
                    time.sleep(0.05)
        finally:
            node.stop()

    # Plaintext, or TLS without a client certificate: etcd refuses; one line, exit 3.
    for args in ([], [f"--etcd-ca={pki}/ca.pem"]):
        r = kvwctl(cluster, "--timeout-ms=1500", *args, "cluster")
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and "cannot reach etcd" in r.stderr, r.stderr
    r = kvwctl(cluster, f"--etcd-cert={pki}/client.pem", f"--etcd-key={pki}/client.key", "cluster")
    assert r.returncode == 2 and "need --etcd-ca" in r.stderr, r.stderr


def test_bad_etcd_tls_settings_exit_two(tls_etcd):
    pki, endpoint = tls_etcd
    with tempfile.TemporaryDirectory(prefix="kvw-py-tls-bad-") as work:
        for block, message in (
                (f'etcd_tls {{ ca_file: "{pki}/ca.pem" cert_file: "{pki}/client.pem" }}', "cluster.etcd_tls.key_file"),
                (f'etcd_tls {{ cert_file: "{pki}/client.pem" key_file: "{pki}/client.key" }}',
                 "cluster.etcd_tls.ca_file: is required"),
                (f'etcd_tls {{ ca_file: "{work}/missing.pem" }}', "missing.pem: cannot read")):
            config = os.path.join(work, "c.textproto")
            with open(config, "w") as f:
                f.write(CONFIG + f" cluster {{ {block} }}")
            r = subprocess.run([os.path.join(os.environ["KVW_BIN_DIR"], "kvwardend"), f"--config={config}",
                                "--listen=127.0.0.1:0", f"--cluster=etcd://{endpoint}", "--node=bad"],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 2, (block, r.stderr)
            assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr
