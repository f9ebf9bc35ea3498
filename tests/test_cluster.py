"""Runs on a shared cluster (cluster.py): preemption, mid-epoch checkpoints, one run per out dir, a new
world size, derived caches that are rebuilt. Small and time-bounded: tiny data, the VAE, one thread."""
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import cluster
import data
from conftest import MEAN_LATENT_TRAIN, ROOT, load, run, torchrun, write_random_release

PY = sys.executable
TORCHRUN = os.path.join(os.path.dirname(PY), "torchrun")
ENV = {**{k: v for k, v in os.environ.items() if k != "RANK"}, "OMP_NUM_THREADS": "1"}


def vae_args(d, out, *extra, script="train.py"):
    return [script, "--stage", "vae", "--data-dir", str(d), "--out-dir", str(out), "--batch-size", "4", *extra]


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def start(cmd):
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc, timeout=120):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended first (exit {proc.returncode}): {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def lock_holder(out):
    """The pid in OUT/run.lock once its holder has written it, else None."""
    try:
        return json.loads((out / cluster.LOCK_NAME).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def same_weights(a, b):
    return all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# ---------------------------------------------------------------------------------------------
# The step order
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [16, 9, 3])
def test_global_batches_are_the_same_for_every_world_size(n):
    """The union of the ranks' shares is the one-process batch, for every world size; with n divisible
    by the world size the shares are what DistributedSampler + per-rank batches gave (the order before
    cluster.py, so older runs resume in their order); set_epoch's `first` skips whole global batches."""
    from torch.utils.data import DistributedSampler
    batch = 4
    for epoch in (0, 3):
        one = cluster.GlobalBatchSampler(n, batch, 0, 1, seed=5)
        one.set_epoch(epoch)
        whole = list(one)
        assert sorted(i for b in whole for i in b) == list(range(n)) and all(len(b) == batch for b in whole[:-1])
        for world in (2, 4):
            shares = []
            for rank in range(world):
                s = cluster.GlobalBatchSampler(n, batch, rank, world, seed=5)
                s.set_epoch(epoch)
                shares.append(list(s))
                assert len(shares[-1]) == len(s) == len(whole)
                if n % world == 0:
                    ds = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=5)
                    ds.set_epoch(epoch)
                    mine = list(ds)
                    per_rank = batch // world
                    assert shares[-1] == [mine[i:i + per_rank] for i in range(0, len(mine), per_rank)]
                s.set_epoch(epoch, first=1)
                assert list(s) == shares[-1][1:] and len(s) == len(whole) - 1
            for k, b in enumerate(whole):
                assert sorted(i for share in shares for i in share[k]) == sorted(b)
        assert len(whole[-1]) == (n % batch or batch)     # n = 9 on 4 ranks: a last batch of 1, 3 empty shares


# ---------------------------------------------------------------------------------------------
# Preemption, mid-epoch checkpoints, a new world size, the lock (one uninterrupted run to compare with)
# ---------------------------------------------------------------------------------------------

def test_preempted_rank_0_under_torchrun_stops_every_rank_after_the_same_step_and_resumes_exactly(tmp_path):
    """SIGTERM to rank 0 alone, before the first step (its lock file is written after its signal
    handler is installed): both ranks agree to stop after step 1, last.pt holds epoch 0 + batch 1 with
    both ranks' noise streams, both exit 75, and rerunning the command ends with the weights of an
    uninterrupted run, bit for bit (VAE sampling noise included)."""
    d = write_random_release(tmp_path / "data", sizes=(("train", 10), ("dev", 2)))
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", *vae_args(d, tmp_path / "run", "--epochs", "2")]
    proc = start(cmd)
    wait_for(lambda: lock_holder(tmp_path / "run"), proc)
    os.kill(lock_holder(tmp_path / "run"), signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert err.count("exitcode  : 75") == 2, err[-3000:]          # torchrun's report of both workers
    assert "preempted (SIGTERM): stopped after step 1 (epoch 1, batch 1 of 3)" in err, err[-3000:]
    ckpt = load(tmp_path / "run" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"], len(ckpt["rng"])) == (0, 1, 1, 2)
    assert not (tmp_path / "run" / "best.pt").exists()
    assert not (tmp_path / "run" / cluster.LOCK_NAME).exists()
    resumed = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    ok(resumed)
    assert "resumed from" in resumed.stdout and "at epoch 0, batch 1, step 1" in resumed.stdout
    ok(torchrun(2, vae_args(d, tmp_path / "straight", "--epochs", "2"), env={"OMP_NUM_THREADS": "1"}, timeout=120))
    a, b = load(tmp_path / "straight" / "last.pt"), load(tmp_path / "run" / "last.pt")
    assert a["step"] == b["step"] == 6 and same_weights(a, b)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One process, 3 epochs of 9 steps (33 samples: the last global batch has one sample, so under 2
    ranks one of them runs a stand-in), z = μ so that one and two processes differ by rounding only."""
    root = tmp_path_factory.mktemp("world")
    d = write_random_release(root / "data", sizes=(("train", 33), ("dev", 2)))
    common = ("--epochs", "3", "--lr", "1e-3")
    ok(run([PY, *vae_args(d, root / "straight", *common, script=MEAN_LATENT_TRAIN)], env={"OMP_NUM_THREADS": "1"}, timeout=120))
    return d, common, load(root / "straight" / "last.pt")


def assert_close_to(straight_ckpt, ckpt):
    """Equal up to the rounding of one process against two (the reduction order differs). The decoders'
    output biases are left out: their L1 gradient is a sum of ±1 over frames that can cancel to exactly 0
    in one order and to a rounding residue in the other, which Adam turns into a step of up to lr."""
    assert ckpt["step"] == straight_ckpt["step"] == 27 and ckpt["epoch"] == 3
    for k, v in straight_ckpt["model"].items():
        if not k.endswith("out.bias"):
            assert torch.allclose(v, ckpt["model"][k], atol=1e-5, rtol=0), (k, (v - ckpt["model"][k]).abs().max())


def test_two_ranks_preempted_through_torchrun_resume_on_one(straight, tmp_path):
    """SIGTERM to torchrun (as a container runtime sends it): torchrun forwards it, the ranks save after
    the current step; the run then continues in one process and ends where the uninterrupted one did."""
    d, common, reference = straight
    out = tmp_path / "run"
    proc = start([TORCHRUN, "--standalone", "--nproc_per_node=2", *vae_args(d, out, *common, "--save-every", "3", script=MEAN_LATENT_TRAIN)])
    wait_for(lambda: (out / "last.pt").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert "preempted (SIGTERM): stopped after step" in err, err[-3000:]
    ckpt = load(out / "last.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] < 27, (ckpt["epoch"], ckpt["batch"])
    resumed = ok(run([PY, *vae_args(d, out, *common, script=MEAN_LATENT_TRAIN)], env={"OMP_NUM_THREADS": "1"}, timeout=120))
    assert "(saved under world size 2, now 1" in resumed.stdout
    assert_close_to(reference, load(out / "last.pt"))


def test_one_process_killed_after_a_mid_epoch_save_resumes_on_two_ranks(straight, tmp_path):
    """--save-every 2, then SIGKILL: last.pt is the last even step, its lock is left behind by a dead
    process; the rerun, on two ranks under torchrun, takes the lock over and ends where the
    uninterrupted one-process run did."""
    d, common, reference = straight
    out = tmp_path / "run"
    proc = start([PY, *vae_args(d, out, *common, "--save-every", "2", script=MEAN_LATENT_TRAIN)])
    wait_for(lambda: (out / "last.pt").exists(), proc)
    proc.kill()
    proc.communicate(timeout=60)
    ckpt = load(out / "last.pt")
    assert ckpt["step"] % 2 == 0 or ckpt["batch"] == 0, (ckpt["step"], ckpt["batch"])
    assert (out / cluster.LOCK_NAME).exists()
    resumed = ok(torchrun(2, vae_args(d, out, *common, script=MEAN_LATENT_TRAIN), env={"OMP_NUM_THREADS": "1"}, timeout=120))
    assert "has ended; taking it over" in resumed.stdout
    assert f"at epoch {ckpt['epoch']}, batch {ckpt['batch']}, step {ckpt['step']} (saved under world size 1, now 2" \
        in resumed.stdout
    assert_close_to(reference, load(out / "last.pt"))
    assert not (out / cluster.LOCK_NAME).exists()


def test_a_second_run_on_a_held_out_dir_is_refused_and_sigusr1_preempts_one_process(tmp_path):
    """A live run holds OUT: a second run there is refused with one line naming its pid and host, and
    changes nothing; a lock file naming a live process of this host (written without flock) is honoured
    too. SIGUSR1 then stops the live run: exit 75, last.pt, the lock file gone."""
    d = write_random_release(tmp_path / "data", sizes=(("train", 64), ("dev", 2)))
    out, other = tmp_path / "run", tmp_path / "other"
    live = start([PY, *vae_args(d, out, "--epochs", "1000")])
    wait_for(lambda: (out / "last.pt").exists(), live)
    other.mkdir()
    (other / cluster.LOCK_NAME).write_text(f"{os.getpid()} {socket.gethostname()}\n")   # this test's process
    second = [start([PY, *vae_args(d, folder, "--epochs", "1")]) for folder in (out, other)]
    for proc, pid in zip(second, (live.pid, os.getpid())):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
        assert err.strip().count("\n") == 0 and err.startswith("error: ") and "is in use by another run" in err
        assert f"pid {pid} on {socket.gethostname()}" in err, err
    assert sorted(os.listdir(other)) == [cluster.LOCK_NAME]
    log_before = (out / "log.txt").read_text().count("stage vae")
    live.send_signal(signal.SIGUSR1)
    _, err = live.communicate(timeout=60)
    assert live.returncode == cluster.PREEMPTED and "preempted (SIGUSR1): stopped after step" in err, err[-3000:]
    ckpt = load(out / "last.pt")
    assert f"stopped after step {ckpt['step']} " in err
    assert sorted(os.listdir(out)) == ["best.pt", "last.pt", "log.txt"]
    assert (out / "log.txt").read_text().count("stage vae") == log_before       # the refused run wrote nothing


# ---------------------------------------------------------------------------------------------
# Derived caches are rebuilt, never trusted
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def warnings_of_a2vslp():
    """The one-line warnings of the a2vslp logger, as a list of messages."""
    seen = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("a2vslp")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


TEXT_CACHE_DAMAGE = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:100]),
    "not a cache": lambda path: torch.save([1, 2, 3], path),
    "another encoder's": lambda path: torch.save({**load(path), "bert": "some/other-bert"}, path),
    "other encoder weights": lambda path: torch.save({**load(path), "encoder": "0" * 40}, path),
    "NaN entries": lambda path: torch.save({**load(path), "emb": {t: e * float("nan") for t, e in load(path)["emb"].items()}}, path),
    "mixed widths": lambda path: torch.save({**load(path), "emb": {t: e[:, :7] if i else e for i, (t, e) in
                                                                   enumerate(load(path)["emb"].items())}}, path),
}


@pytest.mark.parametrize("damage", sorted(TEXT_CACHE_DAMAGE))
def test_a_damaged_or_stale_text_embedding_cache_is_recomputed_with_one_warning(tmp_path, damage, warnings_of_a2vslp,
                                                                                one_thread):
    texts = ["am montag regen im norden", "morgen sonnig", "abends wind"]
    fresh = data.text_embeddings(texts, cache_dir=tmp_path)
    (path,) = tmp_path.glob("text_emb_*.pt")
    TEXT_CACHE_DAMAGE[damage](path)
    again = data.text_embeddings(texts, cache_dir=tmp_path)
    assert all(torch.equal(again[t], fresh[t]) for t in texts)
    assert len(warnings_of_a2vslp) == 1 and str(path) in warnings_of_a2vslp[0] and "recomputing" in warnings_of_a2vslp[0]
    assert "\n" not in warnings_of_a2vslp[0]
    rewritten = load(path)                               # whole again: read without recomputing or warning
    assert rewritten["encoder"] == data.encoder_fingerprint(data.OFFLINE_BERT)
    data.text_embeddings(texts, cache_dir=tmp_path)
    assert len(warnings_of_a2vslp) == 1


LATENT_CACHE_DAMAGE = {
    "truncated": lambda path, lat: path.write_bytes(path.read_bytes()[:100]),
    "not a dict": lambda path, lat: torch.save(list(lat.values()), path),
    "a sample missing": lambda path, lat: torch.save(dict(list(lat.items())[1:]), path),
    "wrong length": lambda path, lat: torch.save({k: v[:-1] for k, v in lat.items()}, path),
    "NaN": lambda path, lat: torch.save({k: v * float("nan") for k, v in lat.items()}, path),
}


@pytest.mark.parametrize("damage", sorted(LATENT_CACHE_DAMAGE))
def test_a_damaged_latent_cache_is_recomputed_with_one_warning(tmp_path, damage, warnings_of_a2vslp, one_thread):
    from vae import DisentangledVAE, cached_latents, extract_latents
    d = write_random_release(tmp_path / "data", sizes=(("dev", 3),))
    samples = data.load_split(os.path.join(d, "dev.pt"))
    torch.manual_seed(0)
    vae = DisentangledVAE("base")
    torch.save({"stage": "vae", "model": vae.state_dict(), "model_args": {"variant": "base"}}, tmp_path / "vae.pt")
    first = cached_latents(str(tmp_path / "vae.pt"), samples, str(tmp_path / "cache"))
    (path,) = (tmp_path / "cache").glob("latents_*.pt")
    LATENT_CACHE_DAMAGE[damage](path, first)
    again = cached_latents(str(tmp_path / "vae.pt"), samples, str(tmp_path / "cache"))
    expected = extract_latents(vae, samples)
    assert again.keys() == expected.keys() and all(torch.equal(again[k], expected[k]) for k in expected)
    assert len(warnings_of_a2vslp) == 1 and str(path) in warnings_of_a2vslp[0] and "recomputing" in warnings_of_a2vslp[0]


def test_generator_training_rebuilds_damaged_caches_and_goes_on(tmp_path, one_thread):
    """End to end: the generator stage finds a truncated text cache and a latent cache that is not a
    torch file, warns once about each, trains, and leaves caches equal to freshly computed ones. (A
    damaged data file or checkpoint still stops a run with one line: tests/test_reliability.py.)"""
    from vae import DisentangledVAE, cached_latents
    d = write_random_release(tmp_path / "data", sizes=(("train", 4), ("dev", 2)))
    torch.manual_seed(0)
    vae = tmp_path / "vae.pt"
    torch.save({"stage": "vae", "model": DisentangledVAE("base").state_dict(), "model_args": {"variant": "base"}}, vae)
    fresh, damaged = tmp_path / "fresh", tmp_path / "run" / "cache"
    splits = [data.load_split(os.path.join(d, f"{split}.pt")) for split in ("train", "dev")]
    data.text_embeddings([s["text"] for split in splits for s in split], cache_dir=fresh)
    for split in splits:
        cached_latents(str(vae), split, str(fresh))
    shutil.copytree(fresh, damaged)
    (text,) = damaged.glob("text_emb_*.pt")
    text.write_bytes(text.read_bytes()[:-50])
    latents = sorted(damaged.glob("latents_*.pt"))
    latents[0].write_bytes(b"not a torch file")
    proc = ok(run([PY, "train.py", "--stage", "generator", "--vae", str(vae), "--data-dir", d, "--out-dir",
                   str(tmp_path / "run"), "--batch-size", "4", "--epochs", "1", "--d-model", "32", "--ff", "64",
                   "--enc-layers", "1", "--dec-layers", "1", "--enc-heads", "2", "--dec-heads", "2"],
                  env={"OMP_NUM_THREADS": "1"}, timeout=120))
    warned = [line for line in proc.stdout.splitlines() if "recomputing it" in line]
    assert len(warned) == 2 and {str(text), str(latents[0])} == {w.split(": ")[0].split(" ", 1)[1] for w in warned}, warned
    assert load(tmp_path / "run" / "last.pt")["step"] == 1
    assert sorted(os.listdir(fresh)) == sorted(os.listdir(damaged))
    for name in os.listdir(fresh):
        a, b = load(fresh / name), load(damaged / name)
        a, b = (a["emb"], b["emb"]) if name.startswith("text_emb_") else (a, b)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


# ---------------------------------------------------------------------------------------------
# The end of a 2-rank run: the process group really ends before the interpreter does
# ---------------------------------------------------------------------------------------------

END_OF_RUN = """
import os, sys
sys.path.insert(0, os.environ["A2VSLP_ROOT"])
import cluster                    # as train.py: before the process group starts
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
import harness
rank, world, device = harness.setup_distributed()
ddp = DDP(torch.nn.Linear(4, 1))
ddp(torch.randn(3, 4)).sum().backward()
del ddp                           # as train.py's end: the DDP wrapper, then the group
dist.barrier()
cluster.end_distributed()
threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
with open(os.path.join(os.environ["OUT"], f"rank{rank}.txt"), "w") as f:   # ranks' stdout interleaves
    f.write(repr(sorted(t for t in threads if "gloo" in t)))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread names come from /proc")
def test_the_process_group_ends_before_the_interpreter_does(tmp_path):
    """A gloo group that outlives destroy_process_group is torn down by the interpreter's final garbage
    collection, where a gloo thread that needs the GIL aborts the process (SIGABRT, "terminate called
    without an active exception": a finished 2-rank run reported as failed, rarely, under load). With
    cluster imported before the group starts (torch.distributed.nn's group.WORLD defaults then hold
    nothing) and the DDP wrapper freed first, end_distributed leaves no gloo thread running; imported
    after init_process_group, the same script leaves gloo_tcp_loop and two pt_gloo_runloop threads."""
    script = tmp_path / "end_of_run.py"
    script.write_text(END_OF_RUN)
    proc = torchrun(2, [str(script)], env={"A2VSLP_ROOT": ROOT, "OMP_NUM_THREADS": "1", "OUT": str(tmp_path)},
                    timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["[]", "[]"]   # no gloo thread left
