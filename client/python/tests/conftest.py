"""A real kvwardend per test module, started by the test and stopped by its pid."""

import os
import signal
import subprocess
import tempfile
import time

import pytest

CONFIG = """
admin_token: "test-admin"
pools {
  name: "main"
  layout { num_layers: 4 num_kv_heads: 2 head_dim: 16 dtype: DTYPE_FP16 page_tokens: 4 }
  capacity_pages: 8192
  chunk_bytes: 32768
}
tenants { name: "alpha" token: "alpha-token" quota_pages: 4096 }
tenants { name: "beta" token: "beta-token" quota_pages: 64 }
leases { default_ttl_ms: 5000 min_ttl_ms: 100 max_ttl_ms: 60000 reap_interval_ms: 20 }
data_plane { disable_ucx: true }
"""


class Daemon:
    def __init__(self, workdir: str, config: str = CONFIG):
        bin_dir = os.environ.get("KVW_BIN_DIR")
        if not bin_dir:
            raise RuntimeError("set KVW_BIN_DIR to the build's bin/ (ctest does)")
        cfg = os.path.join(workdir, "kvwardend.textproto")
        with open(cfg, "w") as f:
            f.write(config)
        ready = os.path.join(workdir, "ready")
        self.attach_socket = os.path.join(workdir, "attach.sock")
        self.log_path = os.path.join(workdir, "kvwardend.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(bin_dir, "kvwardend"), "--config", cfg, "--listen", "127.0.0.1:0",
             "--ready-file", ready, "--attach-socket", self.attach_socket],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not (os.path.exists(ready) and os.path.getsize(ready) > 0):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("kvwardend did not start: " + open(self.log_path).read())
            time.sleep(0.02)
        self.target = open(ready).read().strip()

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def daemon():
    with tempfile.TemporaryDirectory(prefix="kvw-py-") as d:
        daemon = Daemon(d)
        try:
            yield daemon
        finally:
            daemon.stop()
