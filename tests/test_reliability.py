"""Faults, restarts and bad input lose nothing: each case gives a clear message and keeps the out dir."""
import hashlib
import os
import pickle
import sys

import pytest
import torch

import data
from conftest import load, run, torchrun, write_random_release

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


@pytest.fixture
def trained(tmp_path):
    """A data dir and an out dir holding a finished 1-epoch VAE run."""
    d = write_random_release(tmp_path / "data")
    out = tmp_path / "vae"
    proc = run(vae_cmd(d, out, "--epochs", "1", "--batch-size", "4"))
    assert proc.returncode == 0, proc.stderr
    return d, out


def test_worker_killed_mid_epoch_is_restarted_and_ends_like_an_uninterrupted_run(tmp_path):
    d = write_random_release(tmp_path / "data", sizes=(("train", 16), ("dev", 4)))
    args = ["train.py", "--stage", "vae", "--data-dir", d, "--epochs", "3", "--batch-size", "4", "--lr", "1e-3"]
    straight = torchrun(2, [*args, "--out-dir", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr[-3000:]
    # 4 steps per epoch: step 10 is in the middle of epoch 3, after last.pt of epoch 2 was written.
    crashed = torchrun(2, [*args, "--out-dir", str(tmp_path / "crashed")], extra=["--max-restarts=1"],
                       env={"A2VSLP_KILL_AT_STEP": "10"})
    assert crashed.returncode == 0, crashed.stderr[-3000:]
    log = (tmp_path / "crashed" / "log.txt").read_text()
    assert "resumed from" in log and log.count("epoch 3/3") == 1
    a, b = load(tmp_path / "straight" / "last.pt"), load(tmp_path / "crashed" / "last.pt")
    assert a["step"] == b["step"] == 12
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    data.atomic_save({"epoch": 1}, path)
    before = path.read_bytes()

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        data.atomic_save({"epoch": 2}, path)
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


def test_nan_loss_stops_with_stage_epoch_step_and_samples_and_keeps_the_checkpoint(trained):
    d, out = trained
    before = digest(out)
    proc = run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4"), env={"A2VSLP_NAN_AT_STEP": "1"})
    assert_clean_error(proc, "non-finite loss", "stage vae", "epoch 2", "step 3", "train_0")
    after = digest(out)
    assert after["last.pt"] == before["last.pt"] and after["best.pt"] == before["best.pt"]


def test_nan_loss_can_be_skipped_and_counted(trained):
    d, out = trained
    proc = run(vae_cmd(d, out, "--epochs", "2", "--batch-size", "4", "--skip-nonfinite"),
               env={"A2VSLP_NAN_AT_STEP": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "1 skipped" in (out / "log.txt").read_text()
    assert load(out / "last.pt")["step"] == 3        # 2 per epoch, one of epoch 2's skipped


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
