"""The README's offline install, as a new user runs it: a venv over Debian's grpcio,
protobuf and numpy, `pip install --no-build-isolation --no-index client/python` (no Python
index reachable), and the package imports from outside the checkout with its generated
kvwarden.v1 modules."""

import os
import shutil
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PYTHON = "/usr/bin/python3"


def test_offline_install_into_a_fresh_venv(tmp_path):
    if subprocess.run([PYTHON, "-c", "import venv, ensurepip"], capture_output=True).returncode != 0:
        pytest.skip("python3-venv is not installed (scripts/test.sh installs it)")
    # A copy of the package and the protos, laid out as in the checkout: pip's build
    # folders stay out of the tree.
    src = tmp_path / "src"
    shutil.copytree(os.path.join(REPO, "client", "python"), src / "client" / "python",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", ".pytest_cache", "__pycache__"))
    shutil.copytree(os.path.join(REPO, "proto"), src / "proto")
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_NO_INDEX"] = "1"  # as on a machine that reaches no Python index
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-build-isolation", "--no-index",
                        str(src / "client" / "python")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    probe = ("import kvwarden, kvwarden.v1.control_pb2 as c; "
             "assert 'site-packages' in kvwarden.__file__, kvwarden.__file__; "
             "print(c.ListNodesRequest.DESCRIPTOR.full_name, kvwarden.ClusterClient.__name__)")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, env=env,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["kvwarden.v1.ListNodesRequest", "ClusterClient"]
