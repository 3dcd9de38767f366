"""A real kvwardend per test module, started by the test and stopped by its pid."""

import os
import tempfile

import pytest

from kvwarden.spawn import LocalDaemon

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


class Daemon(LocalDaemon):
    def __init__(self, workdir: str, config: str = CONFIG, extra_args=()):
        bin_dir = os.environ.get("KVW_BIN_DIR")
        if not bin_dir:
            raise RuntimeError("set KVW_BIN_DIR to the build's bin/ (ctest does)")
        super().__init__(os.path.join(bin_dir, "kvwardend"), config, workdir, attach=True, extra_args=extra_args)


@pytest.fixture(scope="module")
def daemon():
    with tempfile.TemporaryDirectory(prefix="kvw-py-") as d:
        daemon = Daemon(d)
        try:
            yield daemon
        finally:
            daemon.stop()
