"""End to end through the command lines: VAE → generator (torchrun, phase 1) → phase 2 → sample →
back-translator → evaluate.py. A handful of built-in sentences, overfitted: learning must work."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from conftest import load, run, torchrun

PY = sys.executable
TINY_GEN = ["--d-model", "64", "--ff", "128", "--enc-layers", "1", "--dec-layers", "2", "--enc-heads", "2",
            "--dec-heads", "2", "--dropout", "0.0"]


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Train every stage on 6 sentences (dev = test = train: this is an overfitting check)."""
    import corpus
    root = tmp_path_factory.mktemp("pipeline")
    d = root / "data"
    corpus.write_corpus(str(d), seed=3, num_train=6, num_dev=1, num_test=1)
    shutil.copy(d / "train.pt", d / "dev.pt")
    shutil.copy(d / "train.pt", d / "test.pt")
    d = str(d)
    ok(run([PY, "train.py", "--stage", "vae", "--data-dir", d, "--out-dir", str(root / "vae"),
            "--epochs", "60", "--batch-size", "2", "--lr", "3e-3"]))
    ok(torchrun(2, ["train.py", "--stage", "generator", "--phase", "1", "--vae", str(root / "vae" / "best.pt"),
                    "--data-dir", d, "--out-dir", str(root / "gen1"), "--epochs", "300", "--batch-size", "2",
                    "--lr", "3e-3", *TINY_GEN]))
    ok(run([PY, "train.py", "--stage", "generator", "--phase", "2", "--init", str(root / "gen1" / "best.pt"),
            "--vae", str(root / "vae" / "best.pt"), "--data-dir", d, "--out-dir", str(root / "gen2"),
            "--epochs", "5", "--batch-size", "2", "--lr", "1e-4", *TINY_GEN]))
    ok(run([PY, "train.py", "--stage", "backtranslation", "--data-dir", d, "--out-dir", str(root / "bt"),
            "--epochs", "60", "--batch-size", "2", "--lr", "2e-3", "--bt-dropout", "0.0"]))
    return root, d


def test_generated_poses_come_close_to_the_ground_truth(pipeline):
    """Sampled-then-decoded poses of the training sentences: DTW-MJE under 40 % of the mean pose's."""
    import sample
    from data import load_split
    from metrics import dtw_mje
    root, d = pipeline
    samples = load_split(os.path.join(d, "train.pt"))
    preds = sample.generate_split(str(root / "gen1" / "best.pt"), samples, sample=True, seed=0)
    gts = [s["poses_3d"] for s in samples]
    mean_pose = torch.cat(gts).mean(0)
    baseline = dtw_mje([mean_pose.expand(len(g), -1, -1) for g in gts], gts)
    err = dtw_mje([preds[s["name"]] for s in samples], gts)
    assert err < 0.4 * baseline, f"generated DTW-MJE {err:.4f} vs mean pose {baseline:.4f}"
    lengths = [(len(preds[s["name"]]), len(s["poses_3d"])) for s in samples]
    assert all(abs(a - b) <= 0.15 * b + 2 for a, b in lengths), lengths
    ckpt = load(root / "gen1" / "best.pt")
    assert ckpt["world_size"] == 2 and ckpt["phase"] == 1 and "vae" in ckpt and ckpt["bert"]


def test_phase_2_starts_from_phase_1_and_logs_the_kl(pipeline):
    root, _ = pipeline
    log = (root / "gen2" / "log.txt").read_text()
    assert " kl " in log
    first = float(log.split("epoch 1/5")[1].split("dev loss ")[1].split()[0])
    p1 = load(root / "gen1" / "best.pt")
    assert load(root / "gen2" / "best.pt")["phase"] == 2
    # started from the trained phase-1 weights, not from scratch: its dev L1 is already phase 1's
    p1_dev = float((root / "gen1" / "log.txt").read_text().split(f"epoch {p1['epoch']}/300")[1]
                   .split("latent_l1 ")[-1].split()[0])
    gen2_dev = float(log.split("epoch 1/5")[1].split("latent_l1 ")[-1].split()[0])
    assert gen2_dev < 2 * p1_dev + 0.5 and first > 0


def test_phase_2_continues_the_phase_1_hand_boost(pipeline):
    """Eq. 8's state (s, EMAs, step count) carries over from phase 1 instead of restarting at s = 1."""
    root, _ = pipeline
    p1, p2 = load(root / "gen1" / "best.pt"), load(root / "gen2" / "last.pt")
    assert p1["stage_state"]["steps"] > 0
    assert p2["stage_state"]["steps"] == p1["stage_state"]["steps"] + p2["step"]
    first_s = float((root / "gen2" / "log.txt").read_text().split("epoch 1/5")[1].split(" s ")[1].split()[0])
    assert first_s >= min(p1["stage_state"]["s"], 4.0) * 0.9 and first_s > 1.0


def test_evaluate_generators_adds_the_vae_row_and_pictures(pipeline, tmp_path):
    """--generator: GT, the VAE ceiling (ground truth through the generator's VAE, z = μ) and each
    generator; the VAE row's DTW-MJE is recomputed here from the VAE directly."""
    pytest.importorskip("matplotlib")
    from data import load_split
    from metrics import dtw_mje
    from vae import load_vae
    root, d = pipeline
    out = tmp_path / "results.json"
    ok(run([PY, "evaluate.py", "--data-dir", d, "--split", "test", "--generator", str(root / "gen1" / "best.pt"),
            str(root / "gen2" / "best.pt"), "--backtranslator", str(root / "bt" / "best.pt"), "--out", str(out),
            "--pictures", str(tmp_path)]))
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ["GT", "VAE", "A2V-SLP", "A2V-SLP + KL"]   # one VAE, shared
    vae = load_vae(str(root / "gen1" / "best.pt"))
    gts = [s["poses_3d"][::2] for s in load_split(os.path.join(d, "test.pt"))]
    recon = [vae.reconstruct(s["poses_3d"])[::2] for s in load_split(os.path.join(d, "test.pt"))]
    assert rows[1]["DTW"] == pytest.approx(dtw_mje(recon, gts), rel=1e-6) and rows[1]["DTW"] > 0
    path = lambda seqs, j: np.mean([np.linalg.norm(np.diff(s[:, j].double().numpy(), axis=0), axis=1).sum()
                                    for s in seqs])      # mean wrist path length, joint j of the layout
    assert rows[1]["TotDist"] == pytest.approx((path(recon, 5) / path(gts, 5) + path(recon, 2) / path(gts, 2)) / 2,
                                               rel=1e-6)
    assert rows[0]["TotDist"] == rows[0]["Dur"] == rows[1]["Dur"] == 1.0 and rows[0]["WER"] >= 0
    assert all(r["TotDist"] > 0 and r["Dur"] > 0 for r in rows[2:])
    for name in ("example.png", "example_hands.png", "example_alignment_A2VSLP.png", "example_alignment_A2VSLPKL.png"):
        assert (tmp_path / name).stat().st_size > 1000, name


def test_evaluate_scores_a_vae_alone_as_the_generators_would(pipeline, tmp_path):
    """--vae: the VAE row before any generator exists, the same numbers as the VAE row of a
    --generator run with that VAE, which is scored independently here from a submission of its
    reconstructions."""
    from data import load_split
    from vae import load_vae
    root, d = pipeline
    out = tmp_path / "vae.json"
    proc = ok(run([PY, "evaluate.py", "--data-dir", d, "--split", "test", "--vae", str(root / "vae" / "best.pt"),
                   "--backtranslator", str(root / "bt" / "best.pt"), "--out", str(out)]))
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ["GT", "VAE"]
    assert "chrF gain over the constant text, as a share of GT's: VAE" in proc.stdout
    vae = load_vae(str(root / "vae" / "best.pt"))
    sub = {s["name"]: vae.reconstruct(s["poses_3d"]) for s in load_split(os.path.join(d, "test.pt"))}
    torch.save(sub, tmp_path / "recon.pt")
    ok(run([PY, "evaluate.py", "--data-dir", d, "--split", "test", "--predictions", str(tmp_path / "recon.pt"),
            "--backtranslator", str(root / "bt" / "best.pt"), "--out", str(tmp_path / "sub.json")]))
    other = json.loads((tmp_path / "sub.json").read_text())["rows"][1]
    assert {k: rows[1][k] for k in ("DTW", "B4", "chrF", "ROUGE", "WER", "TotDist", "Dur")} == pytest.approx(
        {k: other[k] for k in ("DTW", "B4", "chrF", "ROUGE", "WER", "TotDist", "Dur")}, rel=1e-6)


def test_sample_cli_writes_the_submission_format(pipeline, tmp_path):
    root, d = pipeline
    out = tmp_path / "one.pt"
    ok(run([PY, "sample.py", "--generator", str(root / "gen2" / "best.pt"), "--text", "am montag regen im norden",
            "--text", "morgen sonnig", "--out", str(out)]))
    preds = load(out)
    assert list(preds) == ["text_000", "text_001"]
    assert all(v.dim() == 3 and v.shape[1:] == (178, 3) and torch.isfinite(v).all() for v in preds.values())
    again = tmp_path / "again.pt"
    ok(run([PY, "sample.py", "--generator", str(root / "gen2" / "best.pt"), "--text", "am montag regen im norden",
            "--text", "morgen sonnig", "--out", str(again)]))
    assert all(torch.equal(preds[k], v) for k, v in load(again).items())      # fixed seed


def test_evaluate_scores_a_hand_written_submission(pipeline, tmp_path):
    """A submission in the challenge's format, written by hand: the ground truth delayed by two
    frames (one frame at 12.5 fps); evaluate.py scores it without any generator."""
    import metrics
    from backtranslation import SignToText
    from data import load_split, pad_stack
    root, d = pipeline
    samples = load_split(os.path.join(d, "test.pt"))
    sub = {s["name"]: {"poses_3d": torch.cat([s["poses_3d"][:2], s["poses_3d"]])} for s in samples}
    path = tmp_path / "submission.pt"
    torch.save(sub, path)
    out = tmp_path / "results.json"
    proc = ok(run([PY, "evaluate.py", "--data-dir", d, "--split", "test", "--predictions", str(path),
                   "--backtranslator", str(root / "bt" / "best.pt"), "--out", str(out)]))
    assert "| GT" in proc.stdout and "submission.pt" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| Model"))
    assert [c.strip() for c in header.split("|")[2:-1]] == [c + metrics.ARROWS.get(c, "↑") for c in metrics.COLUMNS]
    results = json.loads(out.read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert all(tuple(r) == ("name",) + metrics.COLUMNS for r in results["rows"] + results["baselines"])
    assert rows["GT"]["DTW"] == 0.0 and rows["GT"]["TotDist"] == rows["GT"]["Dur"] == 1.0
    # after [::2] the delay is a repeated first frame, which DTW absorbs: exactly zero error
    assert rows["submission.pt"]["DTW"] == pytest.approx(0.0, abs=1e-9)
    # ... and which adds no motion, one frame more at 12.5 fps: ⌈(n + 2) / 2⌉ / ⌈n / 2⌉ per sequence
    assert rows["submission.pt"]["TotDist"] == pytest.approx(1.0, rel=1e-9)
    n = np.array([(len(s["poses_3d"]) + 1) // 2 for s in samples])
    assert rows["submission.pt"]["Dur"] == pytest.approx(np.mean((n + 1) / n), rel=1e-12)
    constant = results["baselines"][0]                 # a text without poses
    assert constant["WER"] > rows["GT"]["WER"] and constant["DTW"] is constant["TotDist"] is constant["Dur"] is None
    # independent check of the GT row: translate with the model directly, score with sacrebleu
    import sacrebleu
    ckpt = load(root / "bt" / "best.pt")
    model = SignToText.from_config(ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    poses, mask = pad_stack([s["poses_3d"][::2] for s in samples])
    hyps = model.translate(poses, mask, beam_size=3)
    refs = [s["text"] for s in samples]
    b4 = sacrebleu.metrics.BLEU(max_ngram_order=4, tokenize="none", smooth_method="floor", smooth_value=0.0,
                                effective_order=True).corpus_score(hyps, [refs]).score
    assert rows["GT"]["B4"] == pytest.approx(b4, abs=1e-6)
    assert rows["GT"]["WER"] == pytest.approx(metrics.wer(hyps, refs), abs=1e-9)
    # the back-translator really reads the poses: on its training sentences it is far above chance
    assert rows["GT"]["B4"] > 50 and metrics.bleu(hyps, refs, 1) > 70


def test_evaluate_refuses_an_incomplete_submission(pipeline, tmp_path):
    root, d = pipeline
    path = tmp_path / "partial.pt"
    torch.save({"nobody": torch.zeros(3, 178, 3)}, path)
    proc = run([PY, "evaluate.py", "--data-dir", d, "--predictions", str(path),
                "--backtranslator", str(root / "bt" / "best.pt"), "--out", str(tmp_path / "r.json")])
    assert proc.returncode == 1 and "partial.pt" in proc.stderr and "no prediction" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r.json").exists()


def test_evaluate_without_flags_scores_the_runs_of_the_flag_free_stages(pipeline, tmp_path, monkeypatch, capsys):
    """In a folder holding runs/data, runs/generator, runs/generator-kl and runs/backtranslation (where
    train.py's flag-free commands put them), `python evaluate.py` needs no flag and gives the rows
    that naming every path gives."""
    import evaluate
    root, d = pipeline
    (tmp_path / "runs").mkdir()
    for name, target in (("data", d), ("generator", root / "gen1"), ("generator-kl", root / "gen2"),
                         ("backtranslation", root / "bt")):
        os.symlink(target, tmp_path / "runs" / name)
    monkeypatch.chdir(tmp_path)
    evaluate.main([])
    printed = capsys.readouterr().out
    for line in ("--generator runs/generator/best.pt runs/generator-kl/best.pt (default)",
                 "--data-dir runs/data (default)", "--backtranslator runs/backtranslation/best.pt (default)"):
        assert line in printed, line
    evaluate.main(["--data-dir", d, "--generator", str(root / "gen1" / "best.pt"), str(root / "gen2" / "best.pt"),
                   "--backtranslator", str(root / "bt" / "best.pt"), "--out", "named.json"])
    flag_free, named = (json.loads((tmp_path / f).read_text())["rows"] for f in ("results.json", "named.json"))
    assert [r["name"] for r in flag_free] == ["GT", "VAE", "A2V-SLP", "A2V-SLP + KL"]
    assert flag_free == named


def test_evaluate_samples_report_pose_export_and_sigma_picture(pipeline, tmp_path):
    """--samples 3: the mean's and each sample's DTW-MJE (recomputed here from generate_poses and
    generate_samples) beside a positive spread; --format pose: one .pose per sentence holding the
    scored predictions; --pictures: the σ̂ strip."""
    pytest.importorskip("matplotlib")
    import posefile
    import sample
    from data import load_split
    from metrics import dtw_mje
    root, d = pipeline
    gen = str(root / "gen2" / "best.pt")
    out = tmp_path / "results.json"
    ok(run([PY, "evaluate.py", "--data-dir", d, "--split", "test", "--generator", gen, "--backtranslator",
            str(root / "bt" / "best.pt"), "--out", str(out), "--samples", "3", "--format", "pose",
            "--pictures", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]))
    report = json.loads(out.read_text())["sampling"]
    assert [r["name"] for r in report] == ["A2V-SLP + KL"] and report[0]["K"] == 3
    samples = load_split(os.path.join(d, "test.pt"))
    gts = [s["poses_3d"][::2] for s in samples]
    model, vae, ckpt = sample.load_generator(gen)
    texts = [s["text"] for s in samples]
    means = sample.generate_poses(model, vae, texts, ckpt["bert"], sample=False, cache_dir=str(tmp_path / "cache"))
    assert report[0]["DTW_mean"] == pytest.approx(dtw_mje([m[::2] for m in means], gts), rel=1e-6)
    made = sample.generate_samples(model, vae, texts, ckpt["bert"], 3, seed=0, cache_dir=str(tmp_path / "cache"))
    for k in range(3):
        assert report[0]["DTW_samples"][k] == pytest.approx(dtw_mje([s[k, ::2] for _, s in made], gts), rel=1e-6)
    assert report[0]["spread"]["all"] > 0 and len(set(report[0]["DTW_samples"])) == 3
    preds = load(tmp_path / "test_A2V-SLP_KL.pt")
    folder = tmp_path / "test_A2V-SLP_KL"
    assert sorted(os.listdir(folder)) == sorted(f"{n}.pose" for n in preds)
    from pose_format import Pose
    for n, p in preds.items():
        back = np.asarray(Pose.read((folder / f"{n}.pose").read_bytes()).body.data.data)[:, 0]   # file order
        np.testing.assert_allclose(back[:, posefile.FILE_ORDER.argsort()], p.numpy(), atol=1e-6)
    assert (tmp_path / "example_uncertainty.png").stat().st_size > 1000
