"""Shared test helpers: small release-format files and running train.py."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def one_thread():
    """Tiny tensors: on two busy shared cores a second OpenMP thread only adds waiting (tiny
    models run many times faster on one thread). The thread count is restored after the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_random_release(folder, sizes=(("train", 8), ("dev", 4)), seed=0, frames=(4, 12), lengths=None):
    """Random poses in the release format (no structure to learn: for loop mechanics only).

    lengths, when given, maps split → list of sequence lengths (overrides sizes and frames)."""
    os.makedirs(folder, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    if lengths is not None:
        sizes = [(split, len(ls)) for split, ls in lengths.items()]
    for split, n in sizes:
        d = {}
        for i in range(n):
            t = int(torch.randint(frames[0], frames[1], (1,), generator=g))
            t = lengths[split][i] if lengths is not None else t
            name = f"{split}_{i:03d}"
            d[name] = {"name": name, "text": f"am tag {i} regen", "gloss": "TAG REGEN",
                       "poses_3d": torch.randn(t, 178, 3, generator=g), "speaker": "Signer01"}
        torch.save(d, os.path.join(folder, f"{split}.pt"))
    return str(folder)


# train.py with the VAE decoding z = μ in training too: one and two processes then differ by rounding only
MEAN_LATENT_TRAIN = os.path.join("tests", "train_mean_latent.py")


def run(args, env=None, timeout=300):
    """Run a command from the repository root; returns the CompletedProcess (never raises)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RANK", None)
    return subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def torchrun(nproc, script_args, env=None, extra=(), timeout=300):
    exe = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return run([exe, "--standalone", f"--nproc_per_node={nproc}", *extra, *script_args], env, timeout)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """The built-in corpus at a small size, generated once per test session."""
    import corpus
    folder = tmp_path_factory.mktemp("corpus")
    corpus.write_corpus(str(folder), seed=0, num_train=160, num_dev=24, num_test=24)
    return str(folder)
