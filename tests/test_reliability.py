"""Faults, restarts and bad input lose nothing: each case gives a clear message and keeps the out dir."""
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

import data
import harness
from conftest import ROOT, load, run, torchrun, write_random_release

PY = sys.executable


def vae_cmd(d, out, *extra):
    return [PY, "train.py", "--stage", "vae", "--data-dir", str(d), "--out-dir", str(out), *extra]


def digest(folder):
    """{file: sha1} of every checkpoint in a folder, and the log's first lines (the log may grow)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            content = f.read()
        out[name] = content.splitlines()[:3] if name == "log.txt" else hashlib.sha1(content).hexdigest()
    return out


def assert_clean_error(proc, *needles, code=1):
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for n in needles:
        assert n in proc.stderr, f"{n!r} not in:\n{proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    d = write_random_release(root / "data")
    proc = run(vae_cmd(d, root / "vae", "--epochs", "1", "--batch-size", "4"))
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture
def trained(trained_once, tmp_path):
    """A data dir and an out dir holding a finished 1-epoch VAE run (a fresh copy for each test)."""
    import shutil
    for name in ("data", "vae"):
        shutil.copytree(trained_once / name, tmp_path / name)
    for name in ("last.pt", "best.pt"):                  # as if trained on the copied data dir
        ckpt = load(tmp_path / "vae" / name)
        ckpt["args"]["data_dir"] = str(tmp_path / "data")
        torch.save(ckpt, tmp_path / "vae" / name)
    return str(tmp_path / "data"), tmp_path / "vae"


def children(pid):
    """Process ids whose parent is `pid` (read from /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if entry.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    return kids


def test_worker_killed_mid_run_is_restarted_and_ends_like_an_uninterrupted_run(tmp_path):
    d = write_random_release(tmp_path / "data", sizes=(("train", 16), ("dev", 4)))
    args = ["train.py", "--stage", "vae", "--data-dir", d, "--epochs", "8", "--batch-size", "4", "--lr", "1e-3"]
    straight = torchrun(2, [*args, "--out-dir", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr[-3000:]
    # SIGKILL one worker from outside as soon as the first last.pt exists (epoch 1 of 8 saved).
    out = tmp_path / "crashed"
    exe = os.path.join(os.path.dirname(PY), "torchrun")
    env = {k: v for k, v in os.environ.items() if k != "RANK"}
    proc = subprocess.Popen([exe, "--standalone", "--nproc_per_node=2", "--max-restarts=1", *args,
                             "--out-dir", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    workers = children(proc.pid)
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "resumed from" in log and log.count("epoch 8/8") == 1
    a, b = load(tmp_path / "straight" / "last.pt"), load(out / "last.pt")
    assert a["step"] == b["step"] == 32
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    harness.atomic_save({"epoch": 1}, path)
    before = path.read_bytes()

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        harness.atomic_save({"epoch": 2}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.pt"]
    assert load(path) == {"epoch": 1}


def test_a_truncated_checkpoint_is_an_error_not_a_fresh_start(trained):
    d, out = trained
    raw = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(raw[: len(raw) // 2])
    before = digest(out)
    proc = run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4"))
    assert_clean_error(proc, "last.pt", "cannot load")
    assert digest(out) == before


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["resume", "sample"])
def test_a_checkpoint_carrying_code_is_refused_and_nothing_runs(tmp_path, where):
    marker = tmp_path / "code_ran"
    out = tmp_path / "run"
    out.mkdir()
    evil = out / "last.pt"
    with open(evil, "wb") as f:
        pickle.dump({"stage": "vae", "model": _Payload(str(marker))}, f)
    d = write_random_release(tmp_path / "data")
    if where == "resume":
        proc = run(vae_cmd(d, out, "--epochs", "1", "--batch-size", "4"))
    else:
        proc = run([PY, "sample.py", "--generator", str(evil), "--text", "am montag regen", "--out", str(tmp_path / "o.pt")])
    assert_clean_error(proc, "last.pt", "refused")
    assert not marker.exists()


def corrupt_sample(data_dir, name="train_002"):
    """One training sample with finite but absurd coordinates (1e30): it passes the data checks, and
    its batch's loss overflows, as a broken pose export would."""
    path = os.path.join(data_dir, "train.pt")
    split = load(path)
    split[name]["poses_3d"] = torch.full_like(split[name]["poses_3d"], 1e30)
    torch.save(split, path)


def test_nan_loss_stops_with_stage_epoch_step_and_samples_and_keeps_the_checkpoint(trained):
    d, out = trained
    corrupt_sample(d)
    before = digest(out)
    proc = run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4"))
    assert_clean_error(proc, "non-finite loss", "stage vae", "epoch 2", "step 3", "train_002")
    after = digest(out)
    assert after["last.pt"] == before["last.pt"] and after["best.pt"] == before["best.pt"]


def test_nan_loss_can_be_skipped_and_counted(trained):
    d, out = trained
    corrupt_sample(d)
    proc = run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4", "--skip-nonfinite"))
    assert proc.returncode == 0, proc.stderr
    assert "1 skipped" in (out / "log.txt").read_text()
    assert load(out / "last.pt")["step"] == 3        # 2 per epoch, one of epoch 2's skipped


def test_absurd_learning_rate_stops_with_a_non_finite_loss(tmp_path):
    d = write_random_release(tmp_path / "data")
    proc = run(vae_cmd(d, tmp_path / "run", "--epochs", "2", "--batch-size", "4", "--lr", "1e30"))
    assert_clean_error(proc, "non-finite", "stage vae")
    assert not (tmp_path / "run" / "best.pt").exists() or load(tmp_path / "run" / "best.pt")["epoch"] == 1


def _write(path, obj):
    torch.save(obj, path)


def _sample(name, **over):
    s = {"name": name, "text": "am montag regen", "gloss": "MONTAG REGEN",
         "poses_3d": torch.randn(5, 178, 3), "speaker": "S"}
    s.update(over)
    return s


# name → (how to break the data dir or the call, words the error must contain, exit code)
BAD_INPUT = {
    "wrong joint count": ("train", {"bad": _sample("bad", poses_3d=torch.zeros(5, 50, 3))}, ["train.pt", "bad", "shape"], 1),
    "NaN poses": ("train", {"bad": _sample("bad", poses_3d=torch.full((5, 178, 3), float("nan")))}, ["train.pt", "bad", "non-finite"], 1),
    "empty sequence": ("train", {"bad": _sample("bad", poses_3d=torch.zeros(0, 178, 3))}, ["train.pt", "bad", "N >= 1"], 1),
    "no text": ("dev", {"bad": {k: v for k, v in _sample("bad").items() if k != "text"}}, ["dev.pt", "bad", "text"], 1),
    "wrong types": ("dev", {"bad": _sample("bad", speaker=7)}, ["dev.pt", "bad", "speaker"], 1),
    "empty split": ("dev", {}, ["dev.pt", "empty"], 1),
    "not a dict": ("dev", [1, 2, 3], ["dev.pt", "expected a dict"], 1),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_data_gives_one_clear_error_and_changes_nothing(trained, case):
    d, out = trained
    split, content, needles, code = BAD_INPUT[case]
    _write(os.path.join(d, f"{split}.pt"), content)
    before = digest(out)
    proc = run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4"))
    assert_clean_error(proc, *needles, code=code)
    assert digest(out) == before


def test_bad_flags_and_checkpoints(trained, tmp_path):
    d, out = trained
    before = digest(out)
    cases = [
        (vae_cmd(d, out, "--vae-variant", "huge"), ["--vae-variant", "invalid choice"], 2),
        ([PY, "train.py", "--stage", "generator", "--data-dir", d, "--out-dir", str(tmp_path / "g")], ["--vae"], 2),
        ([PY, "train.py", "--stage", "generator", "--data-dir", d, "--out-dir", str(tmp_path / "g"),
          "--vae", str(tmp_path / "missing.pt")], ["missing.pt", "no such"], 1),
        ([PY, "train.py", "--stage", "vae", "--window", "4", "--data-dir", d, "--out-dir", str(out)], ["--window"], 2),
        (vae_cmd(d, out, "--vae-variant", "csl", "--epochs", "2"), ["last.pt", "incompatible"], 1),
        (vae_cmd(d, out, "--resume", "never"), ["last.pt exists"], 1),
        ([PY, "train.py", "--stage", "backtranslation", "--data-dir", d, "--out-dir", str(out)], ["last.pt", "'vae' checkpoint"], 1),
        ([PY, "sample.py", "--generator", str(out / "best.pt"), "--text", "am montag", "--out", str(tmp_path / "o.pt")],
         ["best.pt", "'vae' checkpoint", "generator"], 1),
        ([PY, "sample.py", "--generator", str(out / "best.pt"), "--text", "  ", "--out", str(tmp_path / "o.pt")],
         ["--text #1 is empty"], 1),
        ([PY, "evaluate.py", "--data-dir", d, "--split", "dev", "--predictions", str(out / "best.pt"), "--backtranslator",
          str(out / "best.pt"), "--out", str(tmp_path / "r.json")], ["best.pt", "'vae' checkpoint", "back-translation"], 1),
    ]
    for cmd, needles, code in cases:
        assert_clean_error(run(cmd), *needles, code=code)
    assert digest(out) == before
    assert not (tmp_path / "o.pt").exists()


# ---------------------------------------------------------------------------------------------
# Round two (issue 14): uneven dev shards, refused resumes, one-line errors, no silent overwrites
# ---------------------------------------------------------------------------------------------

TINY_GEN = ["--d-model", "32", "--ff", "64", "--enc-layers", "1", "--dec-layers", "1", "--enc-heads", "2",
            "--dec-heads", "2", "--dropout", "0.0"]


def snapshot(folder):
    """{relative path: (sha1, mtime_ns)} of every file under folder (None if it does not exist)."""
    if not os.path.exists(folder):
        return None
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = (hashlib.sha1(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def gen_cmd(d, vae, out, *extra):
    return [PY, "train.py", "--stage", "generator", "--vae", str(vae), "--data-dir", str(d), "--out-dir", str(out),
            "--batch-size", "4", *TINY_GEN, *extra]


@pytest.mark.parametrize("num_dev", [5, 1])
def test_dev_loss_on_uneven_shards_equals_one_process(tmp_path, num_dev):
    """2 ranks, per-rank batch 2: 5 dev samples are 2 batches on rank 0 and 1 on rank 1; 1 dev sample
    leaves rank 1 without any (this hung). --lr 0 keeps the initial weights, so the dev loss depends
    on the sharding only; it must equal one process and a direct computation over the whole split."""
    lengths = [3, 7, 4, 9, 5][:num_dev]
    d = write_random_release(tmp_path / "data", lengths={"train": [4, 5, 6, 7], "dev": lengths})
    common = ["--epochs", "1", "--batch-size", "4", "--lr", "0"]
    ok(torchrun(2, vae_cmd(d, tmp_path / "two", *common)[1:], timeout=120))
    two = load(tmp_path / "two" / "last.pt")
    assert two["world_size"] == 2
    from vae import DisentangledVAE, selection_error
    model = DisentangledVAE("base")
    model.load_state_dict(two["model"])
    model.eval()
    dev = data.load_split(os.path.join(d, "dev.pt"))
    batch = data.collate([{"name": s["name"], "text": s["text"], "poses": s["poses_3d"]} for s in dev])
    with torch.no_grad():
        x_hat, mu, logvar = model(batch["poses"], sample=False)
        weights = {"body": 1.0, "right_hand": 10.0, "left_hand": 14.0, "face": 2.0}
        direct, _ = selection_error(x_hat, batch["poses"], batch["frame_mask"], weights)   # the dev criterion
    assert two["val"] == pytest.approx(direct.item(), rel=1e-5)
    if num_dev > 1:                                        # and one process gives the same
        ok(run(vae_cmd(d, tmp_path / "one", *common)))
        assert load(tmp_path / "one" / "last.pt")["val"] == pytest.approx(two["val"], rel=1e-6)


def test_dev_sharding_of_phoenix_dev_over_8_ranks(monkeypatch):
    """PHOENIX dev: 519 sentences, 8 ranks, global batch 64 (8 per rank): 9 dev batches on 7 ranks,
    8 on the last. Each rank's run_epoch is run with counting stand-ins for the collectives: all ranks
    make the same calls, and the sum of what they all-reduce is the one-process dev loss."""
    import types

    import cluster
    import train
    n, world, per_rank = 519, 8, 64 // 8
    shards = [cluster.dev_shard(n, r, world) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))          # each sample exactly once
    assert [-(-len(s) // per_rank) for s in shards] == [9] * 7 + [8]
    g = torch.Generator().manual_seed(0)
    samples = [{"name": f"s{i}", "text": "t", "poses_3d": torch.randn(1 + i % 3, 178, 3, generator=g)}
               for i in range(n)]
    dataset = data.SignDataset(samples)

    def loss_fn(m, batch):                 # a frame-averaged loss, like the real ones
        mask = batch["frame_mask"]
        per_frame = batch["poses"].abs().mean((-1, -2))                    # (B, T)
        return (per_frame * mask).sum() / mask.sum(), {"other": per_frame.max()}, mask.sum()

    args = types.SimpleNamespace(stage="vae", skip_nonfinite=False)
    ctx = torch.autocast("cpu", enabled=False)

    def epoch(indices, distributed):
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=per_rank,
                                             collate_fn=data.collate)
        run = types.SimpleNamespace(args=args, device="cpu", distributed=distributed, ctx=ctx)
        return train.run_epoch(None, loader, loss_fn, run, 0, 0)

    calls, packs = [], []
    monkeypatch.setattr(train.dist, "get_world_size", lambda: world)
    monkeypatch.setattr(train.dist, "all_reduce", lambda t: (calls[-1].append("all_reduce"), packs.append(t.clone())))
    monkeypatch.setattr(train.dist, "all_gather_object",
                        lambda out, obj: (calls[-1].append("all_gather"), out.__setitem__(slice(None), [obj] * world)))
    for shard in shards:
        calls.append([])
        epoch(shard, True)
    assert all(c == calls[0] for c in calls) and len(calls[0]) == 2        # same collectives on every rank
    # what the all-reduce gives, by name (run_epoch's sums of the logs, the count, frames, non-finite losses)
    total = dict(zip(sorted(["loss", "other", " count", " frames", " nonfinite"]), torch.stack(packs).sum(0).tolist()))
    whole, _, _, _ = epoch(list(range(n)), False)
    direct = sum(s["poses_3d"].abs().mean((-1, -2)).sum() for s in samples) / sum(len(s["poses_3d"]) for s in samples)
    assert total["loss"] / total[" count"] == pytest.approx(whole["loss"], rel=1e-6)   # float32 batch means
    assert whole["loss"] == pytest.approx(direct.item(), rel=1e-6)
    assert total[" frames"] == sum(len(s["poses_3d"]) for s in samples) and total[" nonfinite"] == 0   # none twice


def test_resume_with_changed_flags_is_refused_with_the_differences(trained):
    d, out = trained
    before = snapshot(out)
    proc = run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4", "--beta", "1e-5", "--w-face", "3"))
    assert_clean_error(proc, "error:", "last.pt", "--beta: 0.001 in the checkpoint, 1e-05 now",
                       "--w-face: 2.0 in the checkpoint, 3.0 now")
    assert "--epochs" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before                                         # log.txt included
    # flags that may change on resume
    ok(run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4", "--patience", "5", "--num-workers", "0",
                   "--skip-nonfinite", "--skip-bad-samples", "--resume", "always", "--cache-dir", str(out / "c"))))
    assert load(out / "last.pt")["epoch"] == 2


def test_a_flag_the_checkpoint_predates_counts_as_its_default(trained):
    """A flag added after the checkpoint was written: resuming at its default is allowed, any other
    value is a changed run."""
    d, out = trained
    ckpt = load(out / "last.pt")
    del ckpt["args"]["w_face"]
    torch.save(ckpt, out / "last.pt")
    before = snapshot(out)
    proc = run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4", "--w-face", "3"))
    assert_clean_error(proc, "--w-face: 2.0 in the checkpoint, 3.0 now")
    assert snapshot(out) == before
    ok(run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4")))


def test_help_names_the_flags_that_may_change_on_resume(capsys):
    import train
    with pytest.raises(SystemExit):
        train.get_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--epochs", "--patience", "--num-workers", "--skip-bad-samples", "--skip-nonfinite", "--cache-dir"):
        assert flag in text.split("except for", 1)[1], flag


def test_a_non_finite_generator_loss_is_the_loops_to_stop_or_skip(tmp_path):
    """The generator stage too: the hand weighting of Eq. 8 is not updated from a non-finite step, so the
    loop reports it (stage, epoch, step, samples) or, with --skip-nonfinite, skips it."""
    d = write_random_release(tmp_path / "data")
    ok(run(vae_cmd(d, tmp_path / "vae", "--epochs", "1", "--batch-size", "4")))
    corrupt_sample(d)
    vae = tmp_path / "vae" / "best.pt"
    assert_clean_error(run(gen_cmd(d, vae, tmp_path / "gen", "--epochs", "1")),
                       "non-finite loss", "stage generator", "epoch 1", "train_002", "--skip-nonfinite")
    ok(run(gen_cmd(d, vae, tmp_path / "skip", "--epochs", "1", "--skip-nonfinite")))
    assert "1 skipped" in (tmp_path / "skip" / "log.txt").read_text()


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory):
    """A VAE, a 1-epoch tiny generator and a 1-epoch tiny back-translator; the data and VAE folders'
    contents before the generator ran."""
    root = tmp_path_factory.mktemp("gen")
    d = write_random_release(root / "data", sizes=(("train", 8), ("dev", 3), ("test", 2)))
    ok(run(vae_cmd(d, root / "vae", "--epochs", "1", "--batch-size", "4")))
    inputs = {"data": snapshot(d), "vae": snapshot(root / "vae")}
    ok(run(gen_cmd(d, root / "vae" / "best.pt", root / "gen", "--epochs", "1")))
    ok(run([PY, "train.py", "--stage", "backtranslation", "--data-dir", d, "--out-dir", str(root / "bt"),
            "--epochs", "1", "--batch-size", "4", "--bt-d-model", "16", "--bt-ff", "32", "--bt-layers", "1",
            "--bt-heads", "2"]))
    return root, d, inputs


def test_generator_training_writes_only_into_its_out_dir(gen_run):
    root, d, inputs = gen_run
    assert snapshot(d) == inputs["data"] and snapshot(root / "vae") == inputs["vae"]
    cached = sorted(os.listdir(root / "gen" / "cache"))
    assert len([f for f in cached if f.startswith("latents_")]) == 2 and any(f.startswith("text_emb_") for f in cached)


@pytest.mark.parametrize("change", ["vae", "window", "phase"])
def test_generator_resume_with_another_vae_window_or_phase_is_refused(gen_run, tmp_path, change):
    import shutil
    root, d, _ = gen_run
    out = tmp_path / "gen"
    shutil.copytree(root / "gen", out)
    vae = root / "vae" / "best.pt"
    extra, needle = {"vae": (["--vae", str(root / "vae" / "last.pt")], "--vae: "),
                     "window": (["--window", "5"], "--window: 3 in the checkpoint, 5 now"),
                     "phase": (["--phase", "2", "--init", str(root / "gen" / "best.pt")], "--phase: 1 in the checkpoint, 2 now")}[change]
    before = snapshot(out)
    cmd = gen_cmd(d, vae, out, "--epochs", "2", *extra)
    if change == "vae":
        cmd = [c for c in cmd if c != str(vae)]
        cmd.remove("--vae")
    assert_clean_error(run(cmd), "error:", str(out / "last.pt"), "incompatible", needle)
    assert snapshot(out) == before


def test_resume_never_and_auto_keep_a_lone_best_pt(trained):
    d, out = trained
    os.remove(out / "last.pt")
    before = snapshot(out)
    for mode in ("never", "auto"):
        assert_clean_error(run(vae_cmd(d, out, "--epochs", "1", "--batch-size", "4", "--resume", mode)),
                           "error:", "best.pt")
        assert snapshot(out) == before


def test_stale_latent_caches_are_never_read(gen_run, tmp_path):
    """The latent cache is keyed by the VAE file's bytes and the samples: changed poses under the same
    names, or another VAE at the same path, give freshly computed latents."""
    import shutil
    from vae import cached_latents, extract_latents, load_vae
    root, d, _ = gen_run
    vae_path = tmp_path / "vae.pt"
    shutil.copy(root / "vae" / "best.pt", vae_path)
    samples = data.load_split(os.path.join(d, "dev.pt"))
    cache = tmp_path / "cache"
    first = cached_latents(str(vae_path), samples, str(cache))
    changed = [{**s, "poses_3d": s["poses_3d"] + 1.0} for s in samples]
    again = cached_latents(str(vae_path), changed, str(cache))
    expected = extract_latents(load_vae(str(vae_path)), changed)
    for s in samples:
        assert torch.equal(again[s["name"]], expected[s["name"]])
        assert not torch.equal(again[s["name"]], first[s["name"]])
    ckpt = load(vae_path)                                  # another VAE written to the same path
    ckpt["model"] = {k: v * 1.5 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, vae_path)
    other = cached_latents(str(vae_path), samples, str(cache))
    expected = extract_latents(load_vae(str(vae_path)), samples)
    for s in samples:
        assert torch.equal(other[s["name"]], expected[s["name"]])
    assert len(os.listdir(cache)) == 3


def _release(folder, samples):
    os.makedirs(folder, exist_ok=True)
    for split, content in samples.items():
        torch.save(content, os.path.join(folder, f"{split}.pt"))
    return str(folder)


@pytest.mark.parametrize("case", ["in one file", "across splits"])
def test_duplicate_sample_names_are_refused(tmp_path, capsys, case):
    if case == "in one file":
        splits = {"train": {"a": _sample("x"), "b": _sample("x")}, "dev": {"d": _sample("d")}, "test": {"t": _sample("t")}}
        needles = ["train.pt", "'b'", "'x'", "'a'", "unique"]
    else:
        same = _sample("c")                  # the same sample in two splits is fine, another one is not
        splits = {"train": {"a": _sample("a"), "b": _sample("b"), "c": same}, "dev": {"b": _sample("b"), "c": same},
                  "test": {"t": _sample("t")}}
        needles = ["dev.pt", "'b'", "train.pt", "unique"]
    d = _release(tmp_path / "data", splits)
    out = tmp_path / "run"
    assert_clean_error(run(vae_cmd(d, out, "--epochs", "1", "--batch-size", "2")), "error:", *needles)
    assert snapshot(out) is None
    code, message = cli_error(data.main, ["check", "--data-dir", d], capsys)
    assert code == 1 and message.startswith("error: ") and all(n in message for n in needles), message


def test_text_that_is_not_utf8_is_one_line_error(trained, tmp_path):
    d, out = trained
    torch.save({"bad": _sample("bad", text="am montag \udcff regen")}, os.path.join(d, "dev.pt"))
    before = snapshot(out)
    assert_clean_error(run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4")),
                       "error:", "dev.pt", "'bad'", "'text'", "not valid UTF-8")
    assert snapshot(out) == before
    proc = subprocess.run([PY, "sample.py", "--generator", str(out / "best.pt"), "--text", b"am \xff regen",
                           "--out", str(tmp_path / "o.pt")], cwd=ROOT, capture_output=True, text=True)
    assert_clean_error(proc, "error: --text #1", "not valid UTF-8")
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("content", [[1, 2], {"stage": "vae"}, {"stage": "vae", "args": {}, "model": {}},
                                     {"stage": "vae", "model": {}, "model_args": {"variant": "huge"}}])
def test_a_vae_flag_that_is_not_a_vae_is_one_line_error(gen_run, tmp_path, content):
    root, d, _ = gen_run
    bad = tmp_path / "notavae.pt"
    torch.save(content, bad)
    out = tmp_path / "gen"
    assert_clean_error(run(gen_cmd(d, bad, out, "--epochs", "1")), "error: --vae", "notavae.pt")
    assert snapshot(out) is None


def _fsize_limit(limit):
    import resource
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_checkpoint_that_cannot_be_written_is_one_line_error(trained):
    """Files may grow to 64 kB only (a full disk as the process sees it: writes fail): the save fails
    with one line naming the file; the previous checkpoints and no temporary file remain."""
    d, out = trained
    before = digest(out)
    proc = subprocess.run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4"), cwd=ROOT, capture_output=True,
                          text=True, preexec_fn=_fsize_limit(64 << 10), env={**os.environ, "PYTHONHASHSEED": "0"})
    assert_clean_error(proc, "error:", str(out), "cannot write", "unchanged")
    assert digest(out) == before and sorted(os.listdir(out)) == ["best.pt", "last.pt", "log.txt"]


def test_ctrl_c_names_epoch_step_and_the_saved_epoch(tmp_path):
    import re
    import signal
    import time
    d = write_random_release(tmp_path / "data", sizes=(("train", 8), ("dev", 2)))
    out = tmp_path / "run"
    env = {**os.environ}
    env.pop("RANK", None)
    # A shell's background job (CI may run the suite as one) ignores SIGINT, and Python installs its
    # Ctrl-C handler only when SIGINT has the default action: give the child the default, as a terminal does.
    proc = subprocess.Popen(vae_cmd(d, out, "--epochs", "100000", "--batch-size", "4"), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    m = re.fullmatch(r"interrupted at epoch (\d+) step (\d+); last\.pt is epoch (\d+)\n", err)
    assert m, err
    epoch, step, saved = map(int, m.groups())
    ckpt = load(out / "last.pt")
    assert ckpt["epoch"] == saved and saved in (epoch - 1, epoch) and ckpt["step"] <= step <= 2 * epoch


def cli_error(main, argv, capsys):
    """(exit code, message) of an entry point called in-process; any other exception fails the test."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    code = e.value.code
    return (1, code) if isinstance(code, str) else (code, capsys.readouterr().err)


def test_bad_flags_of_sample_evaluate_render_and_train_are_one_line_errors(gen_run, tmp_path, capsys):
    import evaluate
    import render
    import sample
    import train
    root, d, _ = gen_run
    gen, bt = str(root / "gen" / "best.pt"), str(root / "bt" / "best.pt")
    preds = tmp_path / "preds.pt"
    torch.save({"x": torch.zeros(3, 178, 3)}, preds)
    folder = tmp_path / "folder"
    folder.mkdir()
    ev = ["--data-dir", d, "--split", "test", "--backtranslator", bt]
    cases = [
        (sample.main, ["--generator", gen, "--text", "am tag", "--out", "o.pt", "--batch-size", "0"], 2, ["--batch-size"]),
        (sample.main, ["--generator", gen, "--text", "am tag", "--out", gen], 2, ["--out", "--generator", "overwritten"]),
        (sample.main, ["--generator", str(preds), "--text", "am tag", "--out", str(tmp_path / "o.pt")], 1,
         ["preds.pt", "not a checkpoint of train.py", "predictions file"]),
        (evaluate.main, [*ev, "--generator", gen, "--fps-step", "0"], 2, ["--fps-step"]),
        (evaluate.main, [*ev, "--generator", gen, "--beam", "0"], 2, ["--beam"]),
        (evaluate.main, [*ev, "--generator", gen, "--out", str(folder)], 2, ["--out", "folder"]),
        (evaluate.main, [*ev, "--generator", gen, "--out", bt], 2, ["--out", "--backtranslator", "overwritten"]),
        (render.main, ["--poses", gen, "--data-dir", d, "--split", "test", "--out", str(tmp_path / "p")], 1,
         ["best.pt", "test"]),
        (train.get_args, ["--stage", "generator", "--vae", gen, "--data-dir", d, "--out-dir", "x", "--max-frames", "0"],
         2, ["--max-frames"]),
    ]
    if not torch.cuda.is_available():
        cases += [(sample.main, ["--generator", gen, "--text", "am tag", "--out", "o.pt", "--device", "cuda"], 2,
                   ["--device cuda", "CUDA is not available"]),
                  (evaluate.main, [*ev, "--generator", gen, "--device", "cuda"], 2, ["--device cuda"])]
    before = {k: snapshot(root / k) for k in ("gen", "bt")}
    for main, argv, code, needles in cases:
        got, message = cli_error(main, argv, capsys)
        assert got == code and "Traceback" not in message, (argv, message)
        if code == 2:                                      # argparse: usage, then one error line
            message = message.strip().splitlines()[-1]
            assert ": error: " in message, message
        assert message.startswith("error: ") or code == 2 and len(message.splitlines()) == 1, message
        for n in needles:
            assert n in message, (argv, n, message)
    assert {k: snapshot(root / k) for k in ("gen", "bt")} == before
    assert sorted(os.listdir(tmp_path)) == ["folder", "preds.pt"]


@pytest.mark.parametrize("damage", ["q", "vae variant"])
def test_a_generator_checkpoint_whose_model_args_the_models_refuse_is_one_line_error(gen_run, tmp_path, capsys,
                                                                                     damage):
    """An unknown key (the query span under a name it never had in a release: q) or an unknown VAE
    variant: one error naming the file, no traceback."""
    import sample
    root, _, _ = gen_run
    ckpt = load(root / "gen" / "best.pt")
    if damage == "q":
        ckpt["model_args"]["q"] = ckpt["model_args"].pop("query_span")
    else:
        ckpt["vae_model_args"] = {"variant": "huge"}
    torch.save(ckpt, tmp_path / "g.pt")
    code, message = cli_error(sample.main, ["--generator", str(tmp_path / "g.pt"), "--text", "am tag",
                                            "--out", str(tmp_path / "o.pt")], capsys)
    assert code == 1 and "Traceback" not in message and len(message.splitlines()) == 1, message
    assert message.startswith(f"error: {tmp_path / 'g.pt'}: damaged generator checkpoint: "), message
    assert ("'q'" if damage == "q" else "'huge'") in message
    assert sorted(os.listdir(tmp_path)) == ["g.pt"]


BAD_SUBMISSIONS = {
    "bad JSON": (b'{"test_000": [[[0.0', ["not a JSON file"]),
    "not UTF-8": (b'{"test_000": "\xff"}', ["not a JSON file"]),
    "dict without poses_3d": (b'{"test_000": {"poses": []}, "test_001": {"poses": []}}', ["'test_000'", "without 'poses_3d'"]),
    "None values": (b'{"test_000": null, "test_001": null}', ["'test_000'", "NoneType"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SUBMISSIONS))
def test_bad_json_submissions_are_one_line_errors(gen_run, tmp_path, capsys, case):
    import evaluate
    root, d, _ = gen_run
    content, needles = BAD_SUBMISSIONS[case]
    path = tmp_path / "sub.json"
    path.write_bytes(content)
    code, message = cli_error(evaluate.main, ["--data-dir", d, "--split", "test", "--predictions", str(path),
                                              "--backtranslator", str(root / "bt" / "best.pt"),
                                              "--out", str(tmp_path / "r.json")], capsys)
    assert code == 1 and message.startswith(f"error: {path}: ") and len(message.splitlines()) == 1, message
    for n in needles:
        assert n in message, message
    assert sorted(os.listdir(tmp_path)) == ["sub.json"]


def test_render_makes_a_missing_output_folder(gen_run, tmp_path):
    import render
    root, d, _ = gen_run
    path = tmp_path / "p.pt"
    torch.save({s["name"]: s["poses_3d"] for s in data.load_split(os.path.join(d, "test.pt"))}, path)
    render.main(["--poses", str(path), "--data-dir", d, "--split", "test", "--out", str(tmp_path / "new" / "pic")])
    assert sorted(os.listdir(tmp_path / "new")) == ["pic.gif", "pic.png"]


@pytest.mark.parametrize("case", ["NaN", "177 joints"])
def test_render_refuses_unusable_poses(gen_run, tmp_path, capsys, case):
    import render
    root, d, _ = gen_run
    poses = torch.zeros(4, 178, 3)
    poses = poses.index_fill(0, torch.tensor([2]), float("nan")) if case == "NaN" else poses[:, :177]
    path = tmp_path / "p.pt"
    torch.save({"test_000": poses}, path)
    code, message = cli_error(render.main, ["--poses", str(path), "--data-dir", d, "--split", "test",
                                            "--out", str(tmp_path / "pic")], capsys)
    assert code == 1 and message.startswith(f"error: {path}: sample 'test_000': "), message
    assert ("non-finite" if case == "NaN" else "(4, 177, 3)") in message
    assert sorted(os.listdir(tmp_path)) == ["p.pt"]


def test_evaluate_keeps_both_predictions_of_generators_of_one_name_and_makes_the_pictures_folder(gen_run, tmp_path):
    import json
    import shutil
    import evaluate
    root, d, _ = gen_run
    other = tmp_path / "copy" / "best.pt"
    other.parent.mkdir()
    shutil.copy(root / "gen" / "best.pt", other)
    ckpt = load(other)
    ckpt["model"] = {k: v * 0.5 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, other)                                # same flags, so the same row name, other weights
    out = tmp_path / "res" / "results.json"
    evaluate.main(["--data-dir", d, "--split", "test", "--generator", str(root / "gen" / "best.pt"), str(other),
                   "--backtranslator", str(root / "bt" / "best.pt"), "--beam", "1", "--out", str(out),
                   "--pictures", str(tmp_path / "pics" / "new")])
    first, second = load(out.parent / "test_A2V-SLP.pt"), load(out.parent / "test_A2V-SLP_2.pt")
    assert first.keys() == second.keys() and any(not torch.equal(first[k], second[k]) for k in first)
    rows = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))["rows"]
    assert [r["name"] for r in rows] == ["GT", "VAE", "A2V-SLP", "A2V-SLP (2)"]  # one VAE: one VAE row
    assert sorted(os.listdir(tmp_path / "pics" / "new")) == [
        "example.gif", "example.png", "example_alignment_A2VSLP.png", "example_alignment_A2VSLP2.png",
        "example_hands.png", "example_uncertainty_A2VSLP.png", "example_uncertainty_A2VSLP2.png"]
    assert sorted(os.listdir(out.parent)) == ["cache", "results.json", "test_A2V-SLP.pt", "test_A2V-SLP_2.pt"]


def test_an_overflowing_dtw_is_null_in_strict_json(gen_run, tmp_path):
    import json
    import math

    import evaluate
    import metrics
    root, d, _ = gen_run
    sub = {s["name"]: s["poses_3d"] * 1e30 for s in data.load_split(os.path.join(d, "test.pt"))}
    torch.save(sub, tmp_path / "huge.pt")
    out = tmp_path / "r.json"
    evaluate.main(["--data-dir", d, "--split", "test", "--predictions", str(tmp_path / "huge.pt"),
                   "--backtranslator", str(root / "bt" / "best.pt"), "--beam", "1", "--out", str(out)])
    assert not math.isfinite(metrics.dtw_mje([v[::2] for v in sub.values()],
                                             [s["poses_3d"][::2] for s in data.load_split(os.path.join(d, "test.pt"))]))
    rows = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))["rows"]
    assert rows[1]["name"] == "huge.pt" and rows[1]["DTW"] is None and rows[1]["B1"] is not None
    assert sorted(os.listdir(tmp_path)) == ["huge.pt", "r.json"]


def test_a_total_distance_without_ground_truth_motion_is_null_with_a_note(gen_run, tmp_path, capsys):
    """A test split whose poses never move: Total Distance divides by zero for every posed row; it is
    written as null with a note, and the other columns are scored as usual."""
    import json
    import shutil
    import evaluate
    root, d, _ = gen_run
    still = tmp_path / "still"
    shutil.copytree(d, still)
    samples = torch.load(still / "test.pt", weights_only=True)
    moving = {name: s["poses_3d"].clone() for name, s in samples.items()}
    for s in samples.values():
        s["poses_3d"] = s["poses_3d"][:1].repeat(len(s["poses_3d"]), 1, 1)    # the first frame, held
    torch.save(samples, still / "test.pt")
    torch.save(moving, tmp_path / "moving.pt")
    out = tmp_path / "r.json"
    evaluate.main(["--data-dir", str(still), "--split", "test", "--predictions", str(tmp_path / "moving.pt"),
                   "--backtranslator", str(root / "bt" / "best.pt"), "--beam", "1", "--out", str(out)])
    rows = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))["rows"]
    assert [r["TotDist"] for r in rows] == [None, None]
    assert rows[0]["Dur"] == rows[1]["Dur"] == 1.0 and rows[1]["DTW"] > 0 and rows[1]["WER"] is not None
    printed = capsys.readouterr().out
    assert "note: GT: Total Distance is nan" in printed and "note: moving.pt: Total Distance is nan" in printed


def test_the_constant_text_baseline_does_not_depend_on_string_hashing():
    texts = ["e d", "c", "a b", "c", "a b", "e d", "z", "b a", "b a"]        # four texts tie at 2
    code = f"import evaluate; print(evaluate.most_frequent({texts!r}))"
    outs = {run([PY, "-c", code], env={"PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in (0, 1)}
    assert outs == {"e d"}                                 # the first of the tied texts in file order


def test_synthetic_refuses_a_folder_that_holds_splits(tmp_path, capsys):
    d = write_random_release(tmp_path / "data")
    before = snapshot(d)
    import corpus
    code, message = cli_error(corpus.main, ["--out-dir", d, "--num-train", "2"], capsys)
    assert code == 1 and message.startswith(f"error: {d}: already holds train.pt, dev.pt"), message
    assert snapshot(d) == before


def test_an_out_dir_that_cannot_be_made_is_one_line_error(tmp_path):
    d = write_random_release(tmp_path / "data")
    (tmp_path / "file").write_text("x")
    assert_clean_error(run(vae_cmd(d, tmp_path / "file" / "run", "--epochs", "1", "--batch-size", "4")),
                       "error:", str(tmp_path / "file"))
