"""deploy/: the Kubernetes kustomize base and CPU overlay render (`kubectl kustomize`) and
pass yamllint, and the rendered ConfigMap + Secret run the real daemon; the systemd unit
passes `systemd-analyze verify` and the daemon speaks sd_notify to it; the Dockerfile's
runtime stage installs every library the binaries load; the Grafana dashboard parses and
every expression is valid PromQL over metrics the daemon exports."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

yaml = pytest.importorskip("yaml")

from conftest import CONFIG, Daemon  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DEPLOY = os.path.join(REPO, "deploy")
BIN = os.environ.get("KVW_BIN_DIR", os.path.join(REPO, "build", "bin"))


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (scripts/test.sh installs it)")


def render(overlay):
    need("kubectl")
    out = subprocess.run(["kubectl", "kustomize", os.path.join(DEPLOY, "k8s", overlay)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout, list(yaml.safe_load_all(out.stdout))


def by_kind(docs, kind):
    return [d for d in docs if d and d["kind"] == kind]


@pytest.mark.parametrize("overlay", ["base", "overlays/cpu", "overlays/cluster"])
def test_kustomize_renders_and_lints(overlay, tmp_path):
    text, docs = render(overlay)
    need("yamllint")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(text)
    # The repository's .yamllint: plain `yamllint deploy/k8s` from the checkout passes too.
    rules = os.path.join(REPO, ".yamllint")
    for path in [str(rendered), os.path.join(DEPLOY, "k8s")]:
        lint = subprocess.run(["yamllint", "-s", "-c", rules, path], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
    ds = by_kind(docs, "DaemonSet")[0]
    c = ds["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["grpc"]["port"] == 50051 and c["livenessProbe"]["grpc"]["port"] == 50051
    assert ds["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    gpu = c["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpu == 1) == (overlay != "overlays/cpu"), c["resources"]
    assert ("nodeSelector" in ds["spec"]["template"]["spec"]) == (overlay != "overlays/cpu")
    if overlay == "overlays/cluster":
        # Each daemon joins the etcd the overlay runs, named after its node, at its node's IP.
        sts = by_kind(docs, "StatefulSet")[0]
        assert sts["spec"]["replicas"] == 3
        members = [f"kvwarden-etcd-{i}.kvwarden-etcd:2379" for i in range(3)]
        assert "--cluster=etcd://" + ",".join(members) in c["args"]
        assert "--node=$(NODE_NAME)" in c["args"] and "--advertise=$(HOST_IP):50051" in c["args"]
        # The daemons share the peer token, mounted with the other tokens.
        assert "--peer-token-file=/etc/kvwarden/tokens/peer" in c["args"]
        assert "peer" in by_kind(docs, "Secret")[0]["stringData"]
        env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
        assert env == {"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP"}
    # What the pod runs fits what it is given: a cuda pool only on an image built with
    # CUDA (and the CPU-only default image only with CPU pools), and CPU pools inside the
    # memory limit with room for the daemon.
    config = by_kind(docs, "ConfigMap")[0]["data"]["kvwardend.textproto"]
    pools = re.findall(r"^pools \{(.*?)^\}", config, re.S | re.M)
    assert pools
    devices = [re.search(r'device: "([^"]+)"', p).group(1) for p in pools]
    assert c["image"].endswith("-cuda") == any(d.startswith("cuda") for d in devices), (c["image"], devices)
    cpu_bytes = sum(int(re.search(r"capacity_bytes: (\d+)", p).group(1)) for p, d in zip(pools, devices)
                    if d == "cpu")
    limit = c["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    assert cpu_bytes + (1 << 30) <= int(limit[:-2]) << 30, (cpu_bytes, limit)
    assert by_kind(docs, "ServiceMonitor") and by_kind(docs, "Service") and by_kind(docs, "Secret")
    # The DaemonSet mounts the generated ConfigMap (its hashed name).
    cm = by_kind(docs, "ConfigMap")[0]["metadata"]["name"]
    assert any(v.get("configMap", {}).get("name") == cm for v in ds["spec"]["template"]["spec"]["volumes"])


def write_rendered_config(docs, root, real_tokens=True):
    """The ConfigMap's config and the Secret's tokens, laid out as the pod mounts them;
    `real_tokens`: the shipped change-me placeholders replaced, as an operator must."""
    os.makedirs(os.path.join(root, "config"))
    os.makedirs(os.path.join(root, "tokens"))
    config = os.path.join(root, "config", "kvwardend.textproto")
    with open(config, "w") as f:
        f.write(by_kind(docs, "ConfigMap")[0]["data"]["kvwardend.textproto"])
    for name, token in by_kind(docs, "Secret")[0]["stringData"].items():
        with open(os.path.join(root, "tokens", name), "w") as f:
            f.write((token.replace("change-me", "real-secret") if real_tokens else token) + "\n")
    return config


def test_rendered_configs_load_and_the_cpu_one_serves(tmp_path):
    _, base = render("base")
    # The Secret as shipped: the daemon refuses its placeholders, in one line.
    unedited = write_rendered_config(base, str(tmp_path / "unedited"), real_tokens=False)
    check = subprocess.run([os.path.join(BIN, "kvwardend"), "--config", unedited, "--check-config"],
                           capture_output=True, text=True)
    assert check.returncode == 2 and "'change-me' placeholder" in check.stderr, check.stderr
    assert check.stderr.count("\n") == 1, check.stderr
    base_config = write_rendered_config(base, str(tmp_path / "base"))
    check = subprocess.run([os.path.join(BIN, "kvwardend"), "--config", base_config, "--check-config"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    _, cpu = render("overlays/cpu")
    config = write_rendered_config(cpu, str(tmp_path / "cpu"))
    ready = str(tmp_path / "ready")
    proc = subprocess.Popen([os.path.join(BIN, "kvwardend"), "--config", config, "--listen", "127.0.0.1:0",
                             "--metrics", "127.0.0.1:0", "--ready-file", ready], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not (os.path.exists(ready) and os.path.getsize(ready)):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.05)
        target = open(ready).read().strip()
        admin = by_kind(cpu, "Secret")[0]["stringData"]["admin"].replace("change-me", "real-secret")
        out = subprocess.run([os.path.join(BIN, "kvwctl"), "--target", target, "--token", admin, "--json", "tenants"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert sorted(t["name"] for t in json.loads(out.stdout)["tenants"]) == ["alpha", "beta"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    # The config's JSON log: every line an object.
    assert all(json.loads(l)["event"] for l in proc.stderr.read().splitlines())


def test_systemd_unit_verifies_and_the_daemon_notifies(tmp_path):
    need("systemd-analyze")
    unit = open(os.path.join(DEPLOY, "systemd", "kvwardend.service")).read()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "ProtectSystem=strict" in unit
    local = tmp_path / "kvwardend.service"
    local.write_text(unit.replace("/usr/local/bin/kvwardend", os.path.join(BIN, "kvwardend")))
    verify = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    # sd_notify as systemd would see it: READY, WATCHDOG every half interval, STOPPING.
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(10)
    (tmp_path / "c.textproto").write_text(CONFIG)
    proc = subprocess.Popen([os.path.join(BIN, "kvwardend"), "--config", str(tmp_path / "c.textproto"),
                             "--listen", "127.0.0.1:0"], stderr=subprocess.DEVNULL,
                            env=dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="200000"))
    try:
        got = []
        deadline = time.time() + 10
        while time.time() < deadline and sum("WATCHDOG=1" in m for m in got) < 3:
            got.append(sock.recv(4096).decode())
        assert got[0].startswith("READY=1") and "STATUS=serving on 127.0.0.1:" in got[0], got
        assert sum("WATCHDOG=1" in m for m in got) >= 3, got
        proc.send_signal(signal.SIGTERM)
        while True:
            m = sock.recv(4096).decode()
            if "STOPPING=1" in m:
                break
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_runtime_image_installs_every_library_the_binaries_load():
    need("dpkg")
    dockerfile = open(os.path.join(DEPLOY, "docker", "Dockerfile")).read()
    runtime = dockerfile[dockerfile.index("AS runtime"):]
    listed = set(re.findall(r"\b(lib[a-z0-9.+-]+|zlib1g)\b", runtime.split("rm -rf")[0]))
    needed = set()
    for binary in ("kvwardend", "kvwctl"):
        for line in subprocess.run(["ldd", os.path.join(BIN, binary)], capture_output=True, text=True).stdout.splitlines():
            m = re.search(r"=> (/\S+)", line)
            if not m:
                continue
            owner = subprocess.run(["dpkg", "-S", os.path.realpath(m.group(1))], capture_output=True, text=True)
            if owner.returncode != 0:
                owner = subprocess.run(["dpkg", "-S", m.group(1)], capture_output=True, text=True)
            assert owner.returncode == 0, f"{m.group(1)} belongs to no Debian package"
            needed.add(owner.stdout.split(":")[0])
    assert needed <= listed, f"runtime stage lacks {sorted(needed - listed)}"
    assert "USER 10001" in runtime and "HEALTHCHECK" in runtime and "kvwctl" in runtime
    # No config (and no example token) baked in; CUDA builds are one build argument away.
    assert ".textproto /etc/kvwarden" not in dockerfile
    assert "ARG KVW_ENABLE_CUDA=OFF" in dockerfile and "-DKVW_ENABLE_CUDA=${KVW_ENABLE_CUDA}" in dockerfile


def test_grafana_dashboard_queries_exported_metrics(tmp_path):
    dash = json.load(open(os.path.join(DEPLOY, "grafana", "kvwarden-dashboard.json")))
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 14
    with tempfile.TemporaryDirectory(prefix="kvw-graf-") as d:
        daemon = Daemon(d, CONFIG, extra_args=["--metrics", "127.0.0.1:0"])
        try:
            import kvwarden
            with kvwarden.Client(daemon.target, "test-admin") as admin:
                address = admin.list_pools().metrics_address
            text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
        finally:
            daemon.stop()
    exported = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        exported |= {name + s for s in ("_bucket", "_count", "_sum")} if kind == "histogram" else {name}
    used = {n for e in exprs for n in re.findall(r"\bkvwarden_[a-z_]+\b", e)}
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    # Every exported family shows somewhere, bar the build info used for the variable.
    if shutil.which("promtool"):
        rules = tmp_path / "rules.yml"
        rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
            {"record": f"kvwarden:panel{i}", "expr": e.replace("$instance", ".*")} for i, e in enumerate(exprs)]}]}))
        check = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
