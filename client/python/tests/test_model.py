"""A real model (shared/models/stories260k) decoding through a real kvwardend: the loader,
`full` equal to the plain model, the daemon's choices equal the in-process reference of
every policy on real attention, and the prefill -> decode hand-off between processes."""

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import Daemon  # noqa: E402
from kvwarden import Client, Policy  # noqa: E402
from kvwarden.harness.cache import InMemoryCache, feeds_token_by_token  # noqa: E402
from kvwarden.harness.daemon_cache import KvwardenCache  # noqa: E402
from kvwarden.harness.generate import decode, run_tokens  # noqa: E402
from kvwarden.harness.llama import Llama, Tokenizer  # noqa: E402
from kvwarden.harness.reference import ReferenceCache  # noqa: E402

MODEL_DIR = os.environ.get("KVW_MODEL_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "..",
                                                         "shared", "models", "stories260k"))
MODEL = os.path.join(MODEL_DIR, "stories260K.bin")
TOKENIZER = os.path.join(MODEL_DIR, "tok512.bin")
README_SENTENCE = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the "
                   "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.")

if not os.path.exists(MODEL):
    pytest.skip(f"no model at {MODEL} (KVW_MODEL_DIR)", allow_module_level=True)

# The model's layout: 5 layers, 4 KV heads of 8, fp32 (bit-exact against the plain model).
CONFIG = """
admin_token: "test-admin"
pools {
  name: "main"
  layout { num_layers: 5 num_kv_heads: 4 head_dim: 8 dtype: DTYPE_FP32 page_tokens: 16 }
  capacity_pages: 8192
  chunk_bytes: 65536
}
tenants { name: "alpha" token: "alpha-token" quota_pages: 8192 }
leases { default_ttl_ms: 10000 min_ttl_ms: 100 max_ttl_ms: 60000 reap_interval_ms: 20 }
data_plane { disable_ucx: true }
"""


@pytest.fixture(scope="module")
def model():
    return Llama.load(MODEL)


@pytest.fixture(scope="module")
def tokenizer(model):
    return Tokenizer(TOKENIZER, model.config.vocab_size)


@pytest.fixture(scope="module")
def daemon():
    with tempfile.TemporaryDirectory(prefix="kvw-model-") as d:
        daemon = Daemon(d, CONFIG)
        try:
            yield daemon
        finally:
            daemon.stop()


@pytest.fixture(scope="module")
def story(model):
    """180 tokens the model wrote at temperature 1 (seed 7): held-out text for the checks."""
    c = model.config
    cache = InMemoryCache(c.n_layers, c.n_kv_heads, c.head_dim, c.group)
    return [Tokenizer.BOS] + decode(model, cache, Tokenizer.BOS, 180, temperature=1.0, seed=7,
                                    stop_at_eos=False)[1:]


def in_memory(model):
    c = model.config
    return InMemoryCache(c.n_layers, c.n_kv_heads, c.head_dim, c.group)


def test_loader_prints_the_readme_sentence(model, tokenizer):
    out = decode(model, in_memory(model), Tokenizer.BOS, 70)
    assert tokenizer.decode(out).startswith(README_SENTENCE)
    prompt = tokenizer.encode("Once upon a time, there was a little girl named Lily. She")
    assert len(prompt) == 17
    probs = torch.softmax(run_tokens(model, in_memory(model), prompt, False)[-1], -1)
    top = torch.topk(probs, 2)
    assert [tokenizer.pieces[i] for i in top.indices] == [b" lo", b" had"]
    assert abs(float(top.values[0]) - 0.79) < 0.01 and abs(float(top.values[1]) - 0.12) < 0.01


@pytest.mark.parametrize("kv_source", ["mirror", "grpc", "attach"])
def test_full_policy_logits_equal_the_plain_model(model, daemon, story, kv_source):
    """fp32 pool: the K/V the daemon holds (read back each step with grpc / attach) are
    the plain model's, so the logits are equal, not merely close (tolerance 0)."""
    c = model.config
    prompt, rest = story[:40], story[40:100]
    ref = in_memory(model)
    want = torch.cat([run_tokens(model, ref, prompt, False), run_tokens(model, ref, rest, True)])
    with Client(daemon.target, "alpha-token") as client:
        lease = client.register_worker("model-test", "both")
        attached = client.attach(lease) if kv_source == "attach" else None
        with KvwardenCache(client, lease, c, Policy.full(), kv_source=kv_source, attached=attached) as kv:
            got = torch.cat([run_tokens(model, kv, prompt, False), run_tokens(model, kv, rest, True)])
            assert kv.next_position == 100
        if attached is not None:
            attached.close()
        client.release_lease(lease)
    assert torch.equal(got, want), float((got - want).abs().max())


POLICIES = {
    "streaming": (Policy.streaming(48, 4), ("streaming", 48, 4)),
    "scissorhands": (Policy.scissorhands(48, window=32, recent=8, drop=16),
                     ("scissorhands", 48, 32, 8, 16, 0, 1.0)),
    "windowkv": (Policy.windowkv(48, alpha=8, omega=8), ("windowkv", 48, 8, 8, 8, 5, 14)),
    "h2o": (Policy.h2o(48, recent=8, drop=16, sinks=2), ("h2o", 48, 8, 16, 2)),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_daemon_chooses_what_the_in_process_reference_chooses(model, daemon, story, name):
    """Central = in-process: fed the same real attention, kvwardend and the in-process
    reference keep the same positions in every (layer, head) after every step, so the
    logits are equal too."""
    c = model.config
    policy, ref_policy = POLICIES[name]
    prompt, rest = story[:100], story[100:170]
    ref = ReferenceCache(c.n_layers, c.n_kv_heads, c.head_dim, c.group, ref_policy)
    one_by_one = feeds_token_by_token(name)
    with Client(daemon.target, "alpha-token") as client:
        lease = client.register_worker("model-test", "both")
        with KvwardenCache(client, lease, c, policy) as kv:
            steps = [prompt] if not one_by_one else [[t] for t in prompt]
            steps += [[t] for t in rest]
            for i, tokens in enumerate(steps):
                a = run_tokens(model, ref, tokens, False)
                b = run_tokens(model, kv, tokens, False)
                for layer in range(c.n_layers):
                    for h in range(c.n_kv_heads):
                        assert np.array_equal(ref.pos[layer][h], kv.pos[layer][h]), (i, layer, h)
                assert torch.equal(a, b), (i, float((a - b).abs().max()))
            # The daemon's own view agrees with the worker's.
            kv.flush()
            info = client.describe_sequence(kv.seq)
            assert info.epoch == kv.epoch and info.epoch > 0
            for lkv in client.read_kv(kv.seq):
                for h in range(c.n_kv_heads):
                    assert np.array_equal(lkv.positions[h], kv.pos[lkv.layer][h])
                    assert np.array_equal(lkv.k[h], kv.k[lkv.layer][h].numpy())
            assert kv.max_slots() <= (48 if name != "windowkv" else 48 + len(rest))
        client.release_lease(lease)


def generate_cmd(daemon, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-m", "kvwarden.harness.generate", "--model", MODEL, "--tokenizer", TOKENIZER,
                             "--target", daemon.target, "--token", "alpha-token", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("policy,kv_source", [("full", "grpc"), ("full", "attach"), ("windowkv", "mirror")])
def test_prefill_decode_handoff_between_processes(daemon, policy, kv_source):
    prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
    common = ["--prompt", prompt, "--steps", "60", "--policy", policy, "--budget", "16"]
    single = subprocess.run([sys.executable, "-m", "kvwarden.harness.generate", "--model", MODEL, "--tokenizer", TOKENIZER,
                             "--in-memory", *common], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), timeout=120)
    assert single.returncode == 0, single.stderr
    prefill = generate_cmd(daemon, *common, "--role", "prefill")
    line = prefill.stdout.readline()
    assert line.startswith("handoff "), line + prefill.stderr.read()
    fields = dict(kv.split("=") for kv in line.split()[1:])
    decode_p = generate_cmd(daemon, *common, "--role", "decode", "--kv-source", kv_source,
                            "--from-sequence", fields["sequence"], "--position", fields["position"],
                            "--next", fields["next"])
    resumed = decode_p.stdout.readline()
    prefill.stdin.close()  # the decode worker holds its fork: the prefill worker may go
    assert prefill.wait(timeout=30) == 0, prefill.stderr.read()
    out, err = decode_p.communicate(timeout=120)
    assert decode_p.returncode == 0, err
    assert resumed.startswith("resumed sequence="), resumed + err
    if policy == "full":
        assert out == single.stdout, (out, single.stdout)
    else:
        assert out.startswith(prompt) and len(out) > len(prompt) + 20
