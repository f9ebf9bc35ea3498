"""The training loop: DDP equals one process, resume equals an uninterrupted run, the VAE learns."""
import os
import sys

import pytest
import torch

from conftest import MEAN_LATENT_TRAIN, load, run, torchrun, write_random_release

PY = sys.executable


def vae_args(data_dir, out_dir, *extra, script="train.py"):
    return [script, "--stage", "vae", "--data-dir", data_dir, "--out-dir", out_dir, *extra]


def assert_ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


def test_two_processes_take_the_same_step_as_one(tmp_path):
    """Steps on a global batch of 4: 2 ranks × 2 samples give what 1 process × 4 samples gives.

    Three steps, not one: Adam's first step is lr·sign(g) and would hide a wrongly scaled gradient.
    """
    # An odd number of frames: the L1 gradient of an output bias is a sum of ±1 signs that can cancel
    # to exactly 0 on an even count, and Adam's first step turns rounding noise there into ±lr.
    d = write_random_release(tmp_path / "data", lengths={"train": [3, 4, 5, 7], "dev": [4, 6]})
    common = ["--epochs", "3", "--batch-size", "4", "--lr", "1e-3"]
    assert_ok(run([PY, *vae_args(d, str(tmp_path / "one"), *common, script=MEAN_LATENT_TRAIN)]))
    assert_ok(torchrun(2, vae_args(d, str(tmp_path / "two"), *common, script=MEAN_LATENT_TRAIN)))
    one, two = load(tmp_path / "one" / "last.pt"), load(tmp_path / "two" / "last.pt")
    assert one["step"] == two["step"] == 3 and two["world_size"] == 2
    from vae import DisentangledVAE
    torch.manual_seed(0)                                   # train.py seeds before building the model
    init = DisentangledVAE("base").state_dict()
    moved = 0
    for k, v in one["model"].items():
        # rounding differs between one and two processes; Adam turns a near-zero gradient's rounding
        # into a visible change, so the bound is 1 % of the learning rate, far below one step (lr)
        assert torch.allclose(v, two["model"][k], atol=1e-5, rtol=0), k
        if not k.startswith("pose_"):
            moved += int(((v - init[k]).abs() > 1e-4).sum())
    assert moved > 0.9 * sum(v.numel() for k, v in init.items() if not k.startswith("pose_"))
    assert abs(one["val"] - two["val"]) < 1e-5


def test_resume_equals_an_uninterrupted_run(tmp_path):
    d = write_random_release(tmp_path / "data", sizes=(("train", 12), ("dev", 4)))
    common = ["--batch-size", "4", "--lr", "1e-3"]
    assert_ok(run([PY, *vae_args(d, str(tmp_path / "straight"), "--epochs", "3", *common)]))
    assert_ok(run([PY, *vae_args(d, str(tmp_path / "stopped"), "--epochs", "2", *common)]))
    resumed = run([PY, *vae_args(d, str(tmp_path / "stopped"), "--epochs", "3", *common)])
    assert_ok(resumed)
    assert "resumed from" in resumed.stdout
    a, b = load(tmp_path / "straight" / "last.pt"), load(tmp_path / "stopped" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"] == 9
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def test_checkpoint_is_one_plain_dict(tmp_path):
    d = write_random_release(tmp_path / "data")
    out = tmp_path / "run"
    assert_ok(run([PY, *vae_args(d, str(out), "--epochs", "1", "--batch-size", "4")]))
    for name in ("last.pt", "best.pt"):
        ckpt = load(out / name)                                   # weights_only=True
        for key in ("model", "optimizer", "scheduler", "args", "epoch", "step", "best_val", "rng", "stage"):
            assert key in ckpt
        assert ckpt["stage"] == "vae" and ckpt["args"]["beta"] == 1e-3
    assert "epoch 1/1" in (out / "log.txt").read_text()
    assert not [f for f in os.listdir(out) if ".tmp" in f]


def test_cosine_decay_follows_the_closed_form_and_best_follows_the_dev_criterion(tmp_path):
    """--lr-decay cosine: lr after epoch e is lr0 (1 + cos(pi e / E)) / 2; best.pt is the epoch with
    the lowest logged dev criterion (`select`), whatever the dev loss does."""
    import math
    import re
    d = write_random_release(tmp_path / "data", sizes=(("train", 8), ("dev", 4)))
    out = tmp_path / "run"
    assert_ok(run([PY, *vae_args(d, str(out), "--epochs", "4", "--batch-size", "4", "--lr", "1e-3",
                                 "--lr-decay", "cosine")]))
    lines = [l for l in (out / "log.txt").read_text().splitlines() if re.search(r"epoch \d/4 ", l)]
    lrs = [float(re.search(r"lr ([0-9.e+-]+)", l).group(1)) for l in lines]
    assert lrs == pytest.approx([1e-3 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(1, 5)], rel=1e-2, abs=1e-9)
    select = [float(re.search(r"dev .* select ([0-9.e+-]+)", l).group(1)) for l in lines]
    assert load(out / "best.pt")["epoch"] == 1 + select.index(min(select))


def test_vae_learns_the_corpus(small_corpus, tmp_path):
    """A short training brings dev reconstruction far below predicting the mean training pose."""
    from data import ARTICULATORS, load_split
    from vae import load_vae
    out = tmp_path / "vae"
    assert_ok(run([PY, *vae_args(small_corpus, str(out), "--epochs", "15", "--batch-size", "8", "--lr", "3e-3")]))
    model = load_vae(str(out / "best.pt"))
    train = torch.cat([s["poses_3d"] for s in load_split(os.path.join(small_corpus, "train.pt"))])
    dev = torch.cat([s["poses_3d"] for s in load_split(os.path.join(small_corpus, "dev.pt"))])
    with torch.no_grad():
        rec = model.decode(model.encode(dev)[0])
    mean_pose = train.mean(0)
    for a, sl in ARTICULATORS.items():
        err = (rec[:, sl] - dev[:, sl]).abs().mean()
        base = (mean_pose[sl] - dev[:, sl]).abs().mean()
        print(f"{a}: VAE {err:.4f} vs mean pose {base:.4f} ({base / err:.1f}x lower)")
        assert err < 0.35 * base, f"{a}: VAE {err:.4f} vs mean pose {base:.4f}"


def test_the_first_command_runs_without_flags_and_the_stages_chain(tmp_path, monkeypatch, capsys):
    """`torchrun --nproc_per_node=2 train.py --stage vae --epochs 1` in a fresh folder: rank 0 writes the
    built-in corpus to runs/data (once), the run goes to runs/vae, and the next stages default to it."""
    import subprocess
    from conftest import ROOT
    import corpus
    import train
    for name in os.listdir(ROOT):                        # the project's modules, run from a folder of its own
        if name.endswith(".py") or name == "corpus":
            os.symlink(os.path.join(ROOT, name), tmp_path / name)
    exe = os.path.join(os.path.dirname(PY), "torchrun")
    env = {k: v for k, v in os.environ.items() if k != "RANK"}
    proc = subprocess.run([exe, "--standalone", "--nproc_per_node=2", "train.py", "--stage", "vae", "--epochs", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert_ok(proc)
    assert proc.stdout.count("writing the built-in corpus to runs/data") == 1
    for line in ("--data-dir runs/data (default)", "--out-dir runs/vae (default)", "--adam-betas (0.5, 0.9) (default)"):
        assert proc.stdout.count(line) == 1, line
    written = {split: load(tmp_path / "runs" / "data" / f"{split}.pt") for split in corpus.DEFAULT_SIZES}
    assert {split: len(v) for split, v in written.items()} == corpus.DEFAULT_SIZES
    ckpt = load(tmp_path / "runs" / "vae" / "best.pt")
    assert ckpt["stage"] == "vae" and ckpt["world_size"] == 2 and ckpt["epoch"] == 1
    assert ckpt["args"]["data_dir"] == os.path.join("runs", "data")
    monkeypatch.chdir(tmp_path)
    args = train.get_args(["--stage", "generator"])
    assert (args.vae, args.out_dir, args.init) == (os.path.join("runs", "vae", "best.pt"),
                                                   os.path.join("runs", "generator"), None)
    with pytest.raises(SystemExit) as e:                 # phase 2 needs phase 1's runs/generator/best.pt
        train.get_args(["--stage", "generator", "--phase", "2"])
    assert e.value.code == 2 and "--init defaults to runs/generator/best.pt" in capsys.readouterr().err
