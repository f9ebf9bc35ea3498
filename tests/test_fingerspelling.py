"""Learning on the built-in corpus's hard mode (`--mode fingerspelling`): meaning in quick sequences
of finger configurations, small arm paths. A generator that does not know where in the text each
frame is regresses to the mean pose there, even on its training sentences; this test fails then.

The reader is retrieval, not a trained back-translator (which needs minutes of training to read
fingerspelling): a generated sequence is read as the text of the training sequence nearest to it
under DTW (the exact DTW of evaluate.py), so it reads right only if the hands spell the sentence."""
import sys

import numpy as np
import pytest
import torch

from conftest import run

PY = sys.executable
TINY_GEN = ["--d-model", "64", "--ff", "128", "--enc-layers", "1", "--dec-layers", "2", "--enc-heads", "4",
            "--dec-heads", "4"]


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """VAE and generator (default flags, tiny) trained on 32 fingerspelled sentences; the generated
    means of those sentences with their ground truth and VAE reconstructions."""
    import corpus
    import sample
    from data import load_split
    from vae import load_vae
    root = tmp_path_factory.mktemp("fingerspelling")
    d = str(root / "data")
    corpus.write_corpus(d, seed=3, num_train=32, num_dev=4, num_test=4, mode="fingerspelling")
    ok(run([PY, "train.py", "--stage", "vae", "--data-dir", d, "--out-dir", str(root / "vae"), "--epochs", "60",
            "--batch-size", "8", "--lr", "3e-3", "--lr-decay", "cosine"]))
    ok(run([PY, "train.py", "--stage", "generator", "--vae", str(root / "vae" / "best.pt"), "--data-dir", d,
            "--out-dir", str(root / "gen"), "--epochs", "50", "--batch-size", "8", "--lr", "2e-3", *TINY_GEN]))
    samples = load_split(f"{d}/train.pt")
    preds = sample.generate_split(str(root / "gen" / "best.pt"), samples, sample=False)
    vae = load_vae(str(root / "vae" / "best.pt"))
    with torch.no_grad():
        recon = [vae.reconstruct(s["poses_3d"]) for s in samples]
    return samples, [preds[s["name"]] for s in samples], recon


def read_by_retrieval(seqs, samples):
    """The text of the nearest training ground truth (least DTW cost) of every sequence."""
    import metrics
    refs = [s["poses_3d"] for s in samples]
    pairs = [(q, r) for q in seqs for r in refs]
    cost, _ = metrics.dtw_align([q for q, _ in pairs], [r for _, r in pairs])
    nearest = np.asarray(cost).reshape(len(seqs), len(refs)).argmin(1)
    return [samples[j]["text"] for j in nearest]


def test_generator_spells_its_training_sentences(fitted):
    import evaluate
    import metrics
    samples, generated, recon = fitted
    texts, gts = [s["text"] for s in samples], [s["poses_3d"] for s in samples]
    constant = metrics.chrf([evaluate.most_frequent(texts)] * len(texts), texts)
    gain = {}
    mean_pose = torch.cat(gts).mean(0)
    rows = {"generated": generated, "VAE": recon,
            "mean pose": [mean_pose.expand(len(g), -1, -1) for g in generated]}
    for label, seqs in rows.items():
        gain[label] = (metrics.chrf(read_by_retrieval(seqs, samples), texts) - constant) / (100.0 - constant)
    dist = {label: metrics.total_distance(seqs, gts) for label, seqs in rows.items()}
    report = f"chrF gain shares {gain}, Total Distance {dist}"
    assert gain["mean pose"] < 0.2 and dist["mean pose"] == 0.0, report   # the reader cannot be fooled
    assert gain["VAE"] > 0.9, report
    assert gain["generated"] > 0.6, report
    # path length of the wrists: the VAE's denoised reconstruction is the reachable level
    assert dist["generated"] > 0.6 * dist["VAE"], report
