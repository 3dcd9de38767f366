"""A real Prometheus (Debian's `prometheus`, started and stopped by this test) scrapes a
kvwardend it started: pages used through PromQL equal `kvwctl pools`, a quota refusal
shows in increase()/rate(), and promtool accepts the exposition (ctest label slow)."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import grpc
import numpy as np
import pytest

import kvwarden
from conftest import CONFIG, Daemon
from kvwarden import KvwardenError
from kvwarden.spawn import stop_process

if shutil.which("prometheus") is None or shutil.which("promtool") is None:
    pytest.skip("no prometheus/promtool (apt-get install prometheus; scripts/test.sh installs it)",
                allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, workdir: str, target: str):
        cfg = os.path.join(workdir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: kvwarden\n    static_configs:\n"
                    f"      - targets: ['{target}']\n")
        self.port = free_port()
        self._log = open(os.path.join(workdir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={os.path.join(workdir, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self._log, stderr=subprocess.STDOUT)

    def query(self, expr: str):
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30.0):
        """The first result of `expr` once it has one (a PromQL filter such as '> 0')."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                result = self.query(expr)
                if result:
                    return result
            except OSError:
                pass  # not listening yet
            time.sleep(0.2)
        raise AssertionError(f"no result for {expr} within {timeout} s")

    def stop(self):
        stop_process(self.proc, timeout=10)
        self._log.close()


def test_prometheus_scrapes_kvwardend():
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="kvw-prom-") as d:
        daemon = Daemon(d, CONFIG, extra_args=["--metrics", "127.0.0.1:0"])
        prom = None
        try:
            with kvwarden.Client(daemon.target, "test-admin") as admin, \
                    kvwarden.Client(daemon.target, "alpha-token") as alpha, \
                    kvwarden.Client(daemon.target, "beta-token") as beta:
                address = admin.list_pools().metrics_address
                text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read()
                lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
                assert lint.returncode == 0, lint.stdout + lint.stderr

                prom = Prometheus(d, address)
                prom.wait_for('up{job="kvwarden"} == 1')
                prom.wait_for('kvwarden_tenant_quota_refusals_total{tenant="beta"} == 0')  # a sample before
                lease = alpha.register_worker("prom", "both")
                seq = alpha.create_sequence(lease, "main", 256)
                alpha.reserve_slots(seq, 200)
                k = np.ones((4, 2, 200, 16), np.float16)
                alpha.write_kv(seq, k, k, 0)
                bl = beta.register_worker("prom-beta")
                bs = beta.create_sequence(bl, "main", 100000)
                with pytest.raises(KvwardenError) as e:
                    beta.reserve_slots(bs, 100000)
                assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED

                kvwctl = subprocess.run([os.path.join(os.environ["KVW_BIN_DIR"], "kvwctl"), "--target", daemon.target,
                                         "--token", "test-admin", "--json", "pools"], capture_output=True, text=True)
                assert kvwctl.returncode == 0, kvwctl.stderr
                used = int(json.loads(kvwctl.stdout)["pools"][0]["used_pages"])
                assert used > 0
                got = prom.wait_for(f'kvwarden_pool_used_pages{{pool="main"}} == {used}')
                assert float(got[0]["value"][1]) == used
                prom.wait_for('increase(kvwarden_tenant_quota_refusals_total{tenant="beta"}[1m]) > 0')
                # A (method, code) series appears with its first call; its rate moves from the second.
                refused = ('kvwarden_rpc_duration_seconds_count{code="RESOURCE_EXHAUSTED",'
                           'method="/kvwarden.v1.ControlService/ReserveSlots"}')
                prom.wait_for(f"{refused} == 1")
                with pytest.raises(KvwardenError):
                    beta.reserve_slots(bs, 100000)
                prom.wait_for(f"rate({refused}[1m]) > 0")
                p50 = prom.wait_for('histogram_quantile(0.5, sum by (le) (rate(kvwarden_rpc_duration_seconds_bucket'
                                    '{method="/kvwarden.v1.ControlService/ReserveSlots"}[1m]))) > 0')
                print(f"ReserveSlots p50 per Prometheus: {float(p50[0]['value'][1]) * 1e3:.3f} ms")
                alpha.release_lease(lease)
        finally:
            if prom is not None:
                prom.stop()
            daemon.stop()
    print(f"prometheus test: {time.time() - t0:.1f} s")
