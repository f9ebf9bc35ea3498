"""Built-in synthetic sign-language corpus in the PHOENIX-2014T 3D release format (§4.1).

The paper trains on the SLRTP 2025 3D poses of PHOENIX-2014T (German weather forecasts, DGS),
which cannot be downloaded here. This package writes a stand-in with the same file format
(REFERENCE.md §1) and the same difficulties: German weather sentences whose gloss sequence is
in sign order (language.py), signs built from handshape / location / movement / palm orientation,
two-handed signs, mouthing and other non-manual components, several signers with their own bodies,
speeds and tracking noise, co-articulated transitions and a rest pose at both ends (signing.py,
body.py).

    python -m corpus --out-dir runs/demo/data [--seed 0] [--num-train 1200] [--signers 6]

Coordinates are metres in a body-centred frame: origin at the neck (shoulder midpoint of the
upright torso), x to the signer's left, y up, z toward the camera; shoulders 0.32-0.40 apart.
25 fps. Every sample is `{"name", "text", "gloss", "poses_3d": float32 (N, 178, 3), "speaker"}`.
Same arguments, bit-identical files.
"""
import argparse
import os
import sys

import numpy as np
import torch

from corpus.language import make_sentence
from corpus.signing import make_signers, render_sign_sequence

DEFAULT_SIZES = {"train": 1200, "dev": 100, "test": 100}


def make_splits(seed, num_train, num_dev, num_test):
    """{split: [(text, gloss), ...]}: train sentences may repeat; dev and test sentences are new
    texts (never in train nor in each other) whose glosses all occur in train."""
    rng = np.random.default_rng([seed, 0])
    splits = {"train": [make_sentence(rng) for _ in range(num_train)]}
    seen_texts = {text for text, _ in splits["train"]}
    seen_glosses = {g for _, gloss in splits["train"] for g in gloss.split()}
    for split, count in (("dev", num_dev), ("test", num_test)):
        splits[split] = []
        for _ in range(1000 * count + 1000):
            if len(splits[split]) == count:
                break
            text, gloss = make_sentence(rng)
            if text not in seen_texts and seen_glosses.issuperset(gloss.split()):
                seen_texts.add(text)
                splits[split].append((text, gloss))
        else:
            raise ValueError(f"could not draw {count} unseen {split} sentences from a train set "
                             f"of {num_train}; use more training samples")
    return splits


def write_corpus(out_dir, seed=0, num_train=DEFAULT_SIZES["train"], num_dev=DEFAULT_SIZES["dev"],
                 num_test=DEFAULT_SIZES["test"], signers=6):
    """Write train.pt, dev.pt and test.pt (REFERENCE.md §1 format) to out_dir; returns
    {split: number of samples}. Same arguments give bit-identical files."""
    for name, value, low in (("seed", seed, 0), ("num_train", num_train, 1),
                             ("num_dev", num_dev, 0), ("num_test", num_test, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    people = make_signers(signers)
    splits = make_splits(seed, num_train, num_dev, num_test)
    os.makedirs(out_dir, exist_ok=True)
    for split_id, (split, sentences) in enumerate(splits.items()):
        samples = {}
        for i, (text, gloss) in enumerate(sentences):
            rng = np.random.default_rng([seed, 1 + split_id, i])   # one stream per sample
            signer = people[rng.integers(len(people))]
            name = f"synthetic_{split}_{i:06d}"
            poses = render_sign_sequence(gloss, signer, rng)
            samples[name] = {"name": name, "text": text, "gloss": gloss,
                             "poses_3d": torch.from_numpy(poses), "speaker": signer["name"]}
        path = os.path.join(out_dir, f"{split}.pt")
        torch.save(samples, path + ".tmp")
        os.replace(path + ".tmp", path)
    return {split: len(sentences) for split, sentences in splits.items()}


def write_default_corpus(out_dir):
    """The built-in corpus at its default size, written to out_dir on first use (the default
    --data-dir of train.py and evaluate.py); a folder holding its three splits is left as it is."""
    if not all(os.path.exists(os.path.join(out_dir, f"{split}.pt")) for split in DEFAULT_SIZES):
        print(f"writing the built-in corpus to {out_dir} (first use) ...", flush=True)
        write_corpus(out_dir)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m corpus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", required=True, help="folder for train.pt, dev.pt, test.pt")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (same seed, same files)")
    for split, size in DEFAULT_SIZES.items():
        p.add_argument(f"--num-{split}", type=int, default=size, help=f"{split} samples")
    p.add_argument("--signers", type=int, default=6, help="number of signers (>= 6 recommended)")
    args = p.parse_args(argv)
    there = [f for f in ("train.pt", "dev.pt", "test.pt") if os.path.exists(os.path.join(args.out_dir, f))]
    if there:
        sys.exit(f"error: {args.out_dir}: already holds {', '.join(there)}; choose an empty folder "
                 "(nothing was changed)")
    try:
        counts = write_corpus(args.out_dir, args.seed, args.num_train, args.num_dev, args.num_test,
                              args.signers)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {counts} to {args.out_dir}")
