"""gRPC over TLS and mutual TLS, with certificates this test makes with Debian's openssl:
TLS clients are served (tokens still required), plaintext and unknown-CA clients are not,
and with client_ca_file a client without a certificate from that CA is refused."""

import os
import shutil
import subprocess
import tempfile

import grpc
import pytest

import kvwarden
from conftest import CONFIG, Daemon
from kvwarden import KvwardenError

if shutil.which("openssl") is None:
    pytest.skip("no openssl", allow_module_level=True)


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def make_pki(d: str):
    """CA, a server certificate for 127.0.0.1 / localhost, a client certificate, and an
    unrelated CA with its own client certificate."""
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=kvwarden test {ca}", cwd=d)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ca, ext in (("server", "ca", ["-extfile", "san.ext"]), ("client", "ca", []),
                          ("stranger", "other-ca", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *ext, cwd=d)


@pytest.fixture(scope="module")
def pki():
    with tempfile.TemporaryDirectory(prefix="kvw-tls-") as d:
        make_pki(d)
        yield d


def start(d, pki, mutual):
    tls = f'tls {{ cert_file: "{pki}/server.pem" key_file: "{pki}/server.key"' + \
        (f' client_ca_file: "{pki}/ca.pem"' if mutual else "") + " }\n"
    return Daemon(d, CONFIG + tls)


def call(target, token, creds=None, timeout=3.0):
    with kvwarden.Client(target, token, timeout=timeout, credentials=creds) as c:
        return c.register_worker("tls", keep_alive=False)


def test_tls_serves_tls_clients_only(pki):
    with tempfile.TemporaryDirectory() as d:
        daemon = start(d, pki, mutual=False)
        try:
            creds = kvwarden.tls_credentials(f"{pki}/ca.pem")
            assert call(daemon.target, "alpha-token", creds).id > 0
            with pytest.raises(KvwardenError) as e:  # the token is still required
                call(daemon.target, "not-a-token", creds)
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(KvwardenError) as e:  # plaintext is closed at accept
                call(daemon.target, "alpha-token")
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(KvwardenError) as e:  # a CA the client does not trust
                call(daemon.target, "alpha-token", kvwarden.tls_credentials(f"{pki}/other-ca.pem"))
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
            kvwctl = os.path.join(os.environ["KVW_BIN_DIR"], "kvwctl")
            r = subprocess.run([kvwctl, "--target", daemon.target, "--tls-ca", f"{pki}/ca.pem", "--token", "test-admin",
                                "tenants"], capture_output=True, text=True)
            assert r.returncode == 0 and "alpha" in r.stdout, r.stderr
            r = subprocess.run([kvwctl, "--target", daemon.target, "--token", "test-admin", "--timeout-ms", "2000",
                                "tenants"], capture_output=True, text=True)
            assert r.returncode == 3, r.stderr  # unreachable without TLS
            # One line (no raw gRPC log lines) that says what is likely wrong.
            assert r.stderr.count("\n") == 1 and "--tls-ca" in r.stderr, r.stderr
        finally:
            daemon.stop()
        assert "tls=on" in open(daemon.log_path).read()


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki):
    with tempfile.TemporaryDirectory() as d:
        daemon = start(d, pki, mutual=True)
        try:
            good = kvwarden.tls_credentials(f"{pki}/ca.pem", f"{pki}/client.pem", f"{pki}/client.key")
            assert call(daemon.target, "alpha-token", good).id > 0
            for creds in (kvwarden.tls_credentials(f"{pki}/ca.pem"),  # no certificate
                          kvwarden.tls_credentials(f"{pki}/ca.pem", f"{pki}/stranger.pem", f"{pki}/stranger.key")):
                with pytest.raises(KvwardenError) as e:
                    call(daemon.target, "alpha-token", creds)
                assert e.value.code == grpc.StatusCode.UNAVAILABLE
            # Daemon still well after refused handshakes.
            assert call(daemon.target, "beta-token", good).id > 0
        finally:
            daemon.stop()


def test_bad_tls_config_names_the_field(pki):
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "c.textproto")
        kvwardend = os.path.join(os.environ["KVW_BIN_DIR"], "kvwardend")
        for tls, want in ((f'tls {{ cert_file: "{pki}/server.pem" }}', "tls.key_file: is required"),
                          (f'tls {{ cert_file: "{pki}/nope.pem" key_file: "{pki}/server.key" }}', "nope.pem: cannot read"),
                          (f'tls {{ cert_file: "{pki}/san.ext" key_file: "{pki}/server.key" }}', "is not PEM")):
            with open(cfg, "w") as f:
                f.write(CONFIG + tls)
            r = subprocess.run([kvwardend, "--config", cfg, "--check-config"], capture_output=True, text=True)
            assert r.returncode == 2 and want in r.stderr, r.stderr
