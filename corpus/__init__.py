"""Built-in synthetic sign-language corpus in the PHOENIX-2014T 3D release format (§4.1).

The paper trains on the SLRTP 2025 3D poses of PHOENIX-2014T (German weather forecasts, DGS),
which cannot be downloaded here. This package writes a stand-in with the same file format
(REFERENCE.md §1) and the same difficulties: German weather sentences whose gloss sequence is
in sign order (language.py), signs built from handshape / location / movement / palm orientation,
two-handed signs, mouthing and other non-manual components, several signers with their own bodies,
speeds and tracking noise, co-articulated transitions and a rest pose at both ends (signing.py,
body.py).

    python -m corpus --out-dir runs/demo/data [--seed 0] [--num-train 1200] [--signers 6]
    python -m corpus --out-dir D --num-train 300 --tracking mediapipe   # noisier, like MediaPipe
    python -m corpus --out-dir D --mode fingerspelling --tracking mediapipe   # the hard case

`--tracking mediapipe` adds what a monocular landmark tracker (MediaPipe Holistic, the source of
CSL-Daily's poses) does to motion, on top of the signers' own noise: per-frame landmark jitter,
larger in depth than in the image plane and larger on the hands, and hands that are not detected
for runs of frames, filled by `data.fill_missing` as on the real-data path (see `track_like_mediapipe`).

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

from corpus import fingerspelling, language
from corpus.signing import make_signers, render_sign_sequence

DEFAULT_SIZES = {"train": 1200, "dev": 100, "test": 100}
# mode: (sentence maker, renderer, default sizes)
MODES = {"weather": (language.make_sentence, render_sign_sequence, DEFAULT_SIZES),
         "fingerspelling": (fingerspelling.make_sentence, fingerspelling.render_fingerspelling,
                            {"train": 400, "dev": 100, "test": 100})}


def make_splits(seed, num_train, num_dev, num_test, make_sentence=language.make_sentence):
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


# Landmark noise of `--tracking mediapipe`, standard deviations in metres (xy, depth), and the
# chance per frame that a hand's missed-detection run starts (runs of 2-9 frames: ~12 % of frames).
JITTER = {"body_face": (0.003, 0.008), "hands": (0.005, 0.012)}
MISS_START, MISS_RUN = 0.03, (2, 10)


def track_like_mediapipe(poses, rng):
    """Poses (N, 178, 3) as a monocular landmark tracker would report them: Gaussian jitter per
    frame and landmark (JITTER), and per hand runs of frames without a detection (NaN), which
    `data.fill_missing` then interpolates, exactly as for real MediaPipe output."""
    from data import ARTICULATORS, fill_missing
    out = np.array(poses, dtype=np.float64)
    sd = np.empty((out.shape[1], 3))
    sd[:, :2], sd[:, 2] = JITTER["body_face"]
    hands = [ARTICULATORS["left_hand"], ARTICULATORS["right_hand"]]
    for h in hands:
        sd[h, :2], sd[h, 2] = JITTER["hands"]
    out += rng.normal(size=out.shape) * sd
    for h in hands:
        t = 0
        while t < len(out):
            if rng.random() < MISS_START:
                run = int(rng.integers(*MISS_RUN))
                out[t:t + run, h] = np.nan
                t += run
            t += 1
    return fill_missing(out.astype(np.float32))


def write_corpus(out_dir, seed=0, num_train=DEFAULT_SIZES["train"], num_dev=DEFAULT_SIZES["dev"],
                 num_test=DEFAULT_SIZES["test"], signers=6, tracking="clean", mode="weather"):
    """Write train.pt, dev.pt and test.pt (the release format) to out_dir; returns
    {split: number of samples}. Same arguments give bit-identical files. tracking "mediapipe"
    passes every sequence through `track_like_mediapipe` (the clean motion is the same).
    mode: "weather" (weather-forecast sentences) or "fingerspelling" (see fingerspelling.py)."""
    if tracking not in ("clean", "mediapipe"):
        raise ValueError(f"tracking must be 'clean' or 'mediapipe', got {tracking!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    make_sentence, render, _ = MODES[mode]
    for name, value, low in (("seed", seed, 0), ("num_train", num_train, 1),
                             ("num_dev", num_dev, 0), ("num_test", num_test, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    people = make_signers(signers)
    splits = make_splits(seed, num_train, num_dev, num_test, make_sentence)
    os.makedirs(out_dir, exist_ok=True)
    for split_id, (split, sentences) in enumerate(splits.items()):
        samples = {}
        for i, (text, gloss) in enumerate(sentences):
            rng = np.random.default_rng([seed, 1 + split_id, i])   # one stream per sample
            signer = people[rng.integers(len(people))]
            name = f"synthetic_{split}_{i:06d}"
            poses = render(gloss, signer, rng)
            if tracking == "mediapipe":
                poses = track_like_mediapipe(poses, np.random.default_rng([seed, 1 + split_id, i, 1]))
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
        p.add_argument(f"--num-{split}", type=int, default=None,
                       help=f"{split} samples (default {size}; fingerspelling "
                       f"{MODES['fingerspelling'][2][split]})")
    p.add_argument("--mode", choices=sorted(MODES), default="weather",
                   help="weather: forecast sentences signed with large arm movements (default); "
                   "fingerspelling: 1-3 words spelled letter by letter with both hands, meaning in "
                   "quick finger configurations (the hard case)")
    p.add_argument("--signers", type=int, default=6, help="number of signers (>= 6 recommended)")
    p.add_argument("--tracking", choices=("clean", "mediapipe"), default="clean",
                   help="mediapipe: landmark jitter and missed hand detections (filled), like real "
                   "monocular tracking")
    args = p.parse_args(argv)
    there = [f for f in ("train.pt", "dev.pt", "test.pt") if os.path.exists(os.path.join(args.out_dir, f))]
    if there:
        sys.exit(f"error: {args.out_dir}: already holds {', '.join(there)}; choose an empty folder "
                 "(nothing was changed)")
    try:
        sizes = {split: size if getattr(args, f"num_{split}") is None else getattr(args, f"num_{split}")
                 for split, size in MODES[args.mode][2].items()}
        counts = write_corpus(args.out_dir, args.seed, sizes["train"], sizes["dev"], sizes["test"],
                              args.signers, args.tracking, args.mode)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {counts} to {args.out_dir}")
