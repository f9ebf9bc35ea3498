"""Evaluation metrics of A²V-SLP: back-translation text scores, DTW-MJE and the challenge's motion
columns (§4.2, Table 7).

The protocol is the one of the SLRTP 2025 challenge:
- BLEU-1..4: sacrebleu corpus BLEU, cumulative n-gram orders, tokenize="none", no lowercasing,
  floor smoothing with value 0 (i.e. none), effective order on;
- chrF: sacrebleu CHRF() defaults, corpus level;
- ROUGE: per-sentence ROUGE-L on whitespace tokens with the COCO F-measure (β = 1.2), averaged, ×100;
- DTW-MJE: exact DTW between predicted and reference frames (Euclidean distance between whole
  534-d frames), then the mean per-joint Euclidean distance over the aligned frame pairs of all
  sequences concatenated;
- WER: word edit distance of the back-translation summed over sentences / reference words × 100,
  after lower-casing, punctuation removal and whitespace normalisation of both sides;
- TotDist (Total Distance): mean wrist path length Σ_t ||x_{t+1} - x_t|| of the predictions over
  that of the ground truth, left and right wrist, the two ratios averaged (1 is ideal; a model
  that regresses to the mean pose moves little and scores far below 1);
- Dur (Average Duration): mean over sequences of predicted frames / ground-truth frames.

The functions score exactly what they are given: the 12.5 fps subsampling (`[::2]`) of both sides
is the caller's job; the command line does it (--fps-step 2, on by default for 25 fps data), so
DTW-MJE, TotDist and Dur all see the same subsampled sequences (Dur is then ⌈n/2⌉ / ⌈m/2⌉ per pair).

    python evaluate.py          # after train.py's flag-free stages: runs/data, runs/generator{,-kl}, runs/backtranslation
    python evaluate.py --data-dir runs/demo/data --split test \
        --generator runs/demo/gen1/best.pt runs/demo/gen2/best.pt \
        --backtranslator runs/demo/bt/best.pt --out runs/demo/results.json      # Table 7
    python evaluate.py --data-dir D --split test --predictions submission.pt --backtranslator BT.pt
    python evaluate.py --data-dir D --split dev --vae runs/vae/best.pt --backtranslator BT.pt    # the VAE ceiling alone
    python evaluate.py ... --generator G --samples 8 --pictures runs/pics       # spread of 8 samples; σ̂ picture
    python benchmarks/dtw.py                                                     # DTW speed
"""
import argparse
import json
import logging
import math
import os
import re
import sys
import unicodedata
from collections import Counter

import numpy as np
import torch
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

import harness
import posefile
import render
import sample
from backtranslation import SignToText
from data import ARTICULATOR_ORDER, ARTICULATORS, BODY_JOINTS, NUM_JOINTS, load_split, pad_stack
from generator import GeneratorConfig
from harness import DataError, atomic_json, atomic_save, load_checkpoint, safe_load
from vae import VAEConfig, load_vae

FRAME_DIM = NUM_JOINTS * 3  # 534 values per flattened frame

# ---------------------------------------------------------------------------------------------
# Back-translation text metrics
# ---------------------------------------------------------------------------------------------


def _check_texts(hyps, refs):
    if isinstance(hyps, str) or isinstance(refs, str):
        raise ValueError("hyps and refs must be lists of strings, not a single string")
    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise ValueError("hyps and refs are empty")
    for name, texts in (("hyps", hyps), ("refs", refs)):
        bad = [k for k, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"{name}[{bad[0]}] is {type(texts[bad[0]]).__name__}, expected str")
    return hyps, refs


def _bleu_metric(n):
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= 4:
        raise ValueError(f"BLEU order n must be an int in 1..4, got {n!r}")
    return BLEU(max_ngram_order=n, tokenize="none", smooth_method="floor", smooth_value=0.0,
                effective_order=True)


def bleu(hyps, refs, n=4):
    """Cumulative corpus BLEU-n (0-100) with the challenge's sacrebleu settings."""
    hyps, refs = _check_texts(hyps, refs)
    return float(_bleu_metric(n).corpus_score(hyps, [refs]).score)


def bleu_signature(n=4):
    """The sacrebleu signature string of bleu(..., n), for reports."""
    metric = _bleu_metric(n)
    metric.num_refs = 1  # one reference per sentence (sacrebleu sets this when scoring)
    return str(metric.get_signature())


def chrf(hyps, refs):
    """Corpus chrF (0-100), sacrebleu CHRF() defaults."""
    hyps, refs = _check_texts(hyps, refs)
    return float(CHRF().corpus_score(hyps, [refs]).score)


class WhitespaceTokenizer:
    """rouge-score tokenizer that splits on whitespace only (keeps umlauts, case and punctuation)."""

    def tokenize(self, text):
        return text.split()


def f_beta(precision, recall, beta=1.2):
    """COCO-caption ROUGE-L F-measure: F = (1 + β²) P R / (R + β² P), 0 if P or R is 0."""
    if precision <= 0.0 or recall <= 0.0:
        return 0.0
    return (1.0 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision)


def rouge_l(hyps, refs, beta=1.2):
    """Mean per-sentence ROUGE-L F_β (β = 1.2) on whitespace tokens, ×100."""
    hyps, refs = _check_texts(hyps, refs)
    # rouge-score gives P = LCS/|hyp| and R = LCS/|ref|; its own F uses β = 1, so F_β is ours.
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=WhitespaceTokenizer())
    total = 0.0
    for hyp, ref in zip(hyps, refs):
        s = scorer.score(ref, hyp)["rougeL"]  # score(target, prediction)
        total += f_beta(s.precision, s.recall, beta)
    return 100.0 * total / len(hyps)


def words(text):
    """Lower-cased words of `text` with punctuation (Unicode categories P*) removed, split on any
    whitespace; letters of every script stay: "Über-Nacht: Regen." -> ["übernacht", "regen"]."""
    return "".join(c for c in text.lower() if not unicodedata.category(c).startswith("P")).split()


def edit_distance(hyp, ref):
    """Fewest substitutions + insertions + deletions that turn the word list hyp into ref
    (Levenshtein), one row of the DP table at a time: row[i] = distance of hyp[:i] to ref[:j]."""
    row = list(range(len(hyp) + 1))                                   # ref[:0]: i insertions
    for j, r in enumerate(ref, 1):
        prev, row = row, [j]                                          # hyp[:0]: j deletions
        for i, h in enumerate(hyp, 1):
            row.append(min(prev[i] + 1, row[i - 1] + 1, prev[i - 1] + (h != r)))
    return row[-1]


def wer(hyps, refs):
    """Corpus word error rate (0-100, may exceed 100): Σ edit distance / Σ reference words × 100,
    both sides normalised by words()."""
    hyps, refs = _check_texts(hyps, refs)
    pairs = [(words(h), words(r)) for h, r in zip(hyps, refs)]
    num_words = sum(len(r) for _, r in pairs)
    if num_words == 0:
        raise ValueError("the references hold no words after punctuation removal: WER is undefined")
    return 100.0 * sum(edit_distance(h, r) for h, r in pairs) / num_words


# ---------------------------------------------------------------------------------------------
# DTW-MJE: exact DTW, one vectorised step per anti-diagonal for a chunk of pairs at once
# ---------------------------------------------------------------------------------------------
#
# Local cost c(i, j) = ||x_i - y_j||_2 between whole 534-d frames; accumulated cost
#     D(0, 0) = c(0, 0),   D(i, j) = c(i, j) + min(D(i-1, j-1), D(i-1, j), D(i, j-1)),
# with +inf outside the n×m grid; the DTW cost is D(n-1, m-1). The cells of an anti-diagonal
# s = i + j depend only on diagonals s-1 and s-2, so D is stored skewed, diagonal by diagonal:
# S[s + 2, i + 1, p] = D(i, j) of pair p, with a border of +inf (row i = -1, column j = -1) around
# the grid and S[0, 0] = 0 as the start. One numpy step per diagonal then serves all pairs.

CHUNK_CELLS = 1 << 22  # cells of S per chunk of pairs (32 MB of float64)
FRAME_BATCH = 16       # pairs per batched matrix product of frame_costs
REFINE = 1e-6          # relative size of c² below which a cost is recomputed from differences


def _frames(seqs, name):
    """Checks a list of (N, 178, 3) sequences -> their frames as numpy (N, 534) arrays (views
    where possible; half precision becomes float32) and their lengths (P,)."""
    if not isinstance(seqs, (list, tuple)):
        raise ValueError(f"{name} must be a list of (N, {NUM_JOINTS}, 3) sequences, "
                         f"got {type(seqs).__name__}")
    frames = []
    for k, seq in enumerate(seqs):
        if isinstance(seq, torch.Tensor):
            if seq.dtype == torch.bool or seq.is_complex():
                raise ValueError(f"{name}[{k}] must be real-valued, got dtype {seq.dtype}")
            seq = seq.detach().cpu()
            seq = (seq.float() if seq.dtype in (torch.float16, torch.bfloat16) else seq).numpy()
        elif not isinstance(seq, np.ndarray):
            raise ValueError(f"{name}[{k}] must be a torch.Tensor or numpy array, "
                             f"got {type(seq).__name__}")
        elif seq.dtype.kind not in "fiu":
            raise ValueError(f"{name}[{k}] must be real-valued, got dtype {seq.dtype}")
        if seq.ndim != 3 or seq.shape[1:] != (NUM_JOINTS, 3) or len(seq) == 0:
            raise ValueError(f"{name}[{k}] must have shape (N, {NUM_JOINTS}, 3) with N >= 1, "
                             f"got {tuple(seq.shape)}")
        frames.append((seq.astype(np.float32) if seq.dtype == np.float16 else seq)
                      .reshape(len(seq), FRAME_DIM))
    return frames, np.array([len(f) for f in frames], dtype=np.int64)


def frame_costs(xs, ys, labels):
    """Local costs c(i, j) = ||x_i - y_j|| of B pairs -> (B, N, M) float64, +inf outside each
    pair's n_b × m_b block.

    xs, ys: lists of B frame arrays (n_b, 534), (m_b, 534); labels name the pairs in errors.
    c² = |x|² + |y|² - 2 x·y in float64 with one batched matrix product (torch's, which works
    through the batch in one parallel region: hundreds of small products stall on shared cores).
    Its rounding error is a few ulps of |x|² + |y|², so where c² < REFINE × (max |x|² + max |y|²)
    of the pair (near-equal frames, rare) the cost is recomputed from the frame differences:
    relative errors stay below ~1e-9 (typically ~1e-14) and equal frames cost exactly 0.
    """
    n, m = [len(x) for x in xs], [len(y) for y in ys]
    x = np.zeros((len(xs), max(n), FRAME_DIM))                            # (B, N, 534) zero-padded
    y = np.zeros((len(ys), max(m), FRAME_DIM))                            # (B, M, 534)
    for b in range(len(xs)):
        x[b, :n[b]], y[b, :m[b]] = xs[b], ys[b]
    xx, yy = np.einsum("bid,bid->bi", x, x), np.einsum("bjd,bjd->bj", y, y)  # (B, N), (B, M)
    finite = np.isfinite(xx).all(1) & np.isfinite(yy).all(1)             # (B,)
    if not finite.all():
        raise ValueError(f"{labels[np.argmin(finite)]} contains NaN or inf")
    sq = xx[:, :, None] + yy[:, None, :]                                  # (B, N, M) |x|² + |y|²
    torch.from_numpy(sq).baddbmm_(torch.from_numpy(x), torch.from_numpy(y).transpose(1, 2),
                                  alpha=-2.0)                             # -2 x·y, in place
    for b in range(len(xs)):
        sq[b, n[b]:], sq[b, :, m[b]:] = np.inf, np.inf                    # padding
    near = sq < REFINE * (xx.max(1) + yy.max(1))[:, None, None]           # includes all c² < 0
    for b, i in zip(*np.nonzero(near.any(2))):
        j = np.flatnonzero(near[b, i])
        d = y[b, j] - x[b, i]                                             # (k, 534)
        sq[b, i, j] = np.einsum("kd,kd->k", d, d)
    return np.sqrt(sq, out=sq)


def skew(C):
    """Local costs C (P, N, M), +inf outside each pair's block -> S (N+M+1, N+1, P) float64 with
    S[i+j+2, i+1, p] = C[p, i, j], +inf everywhere else but S[0, 0] = 0 (the start)."""
    P, N, M = C.shape
    S = np.full((N + M + 1, N + 1, P), np.inf)
    S[0, 0] = 0.0
    i, j = np.indices((N, M))                                             # (N, M) each
    S[i + j + 2, i + 1] = C.transpose(1, 2, 0)                            # (N, M, P)
    return S


def dtw_accumulate(S):
    """Local costs -> accumulated costs D, in place, one anti-diagonal s per step (Eq. above):
    S[s, a] += min(S[s-2, a-1], S[s-1, a-1], S[s-1, a]) for rows a >= 1. Cells off the grid stay
    +inf; afterwards the DTW cost of pair p is S[n_p + m_p, n_p, p]."""
    for s in range(2, len(S)):
        best = np.minimum(S[s - 1, :-1], S[s - 1, 1:])                   # D(i-1, j), D(i, j-1)
        np.minimum(best, S[s - 2, :-1], out=best)                        # D(i-1, j-1)
        S[s, 1:] += best                                                  # (N, P)
    return S


def dtw_backtrack(S, n, m):
    """Warping paths from (n-1, m-1) back to (0, 0) -> one (L_p, 2) array of (i, j) per pair.

    S from dtw_accumulate. Each step moves to the predecessor with the smallest D; ties go to the
    diagonal (i-1, j-1), then (i-1, j), then (i, j-1). All pairs step together; a pair that has
    reached (0, 0) stays there.
    """
    p, i, j = np.arange(len(n)), n - 1, m - 1
    steps = [(i, j)]
    while (i + j).any():
        s = i + j + 2
        diag, up, left = S[s - 2, i, p], S[s - 1, i, p], S[s - 1, i + 1, p]
        to_diag = diag <= np.minimum(up, left)
        to_up = to_diag | (up <= left)                                    # i moves
        to_left = to_diag | ~to_up                                        # j moves
        moving = (i + j) > 0
        i, j = i - (to_up & moving), j - (to_left & moving)
        steps.append((i, j))
    ij = np.array(steps).transpose(2, 0, 1)                               # (P, steps, 2)
    lengths = (ij.sum(-1) > 0).sum(1) + 1                                 # (P,) path lengths L_p
    return [ij[q, :lengths[q]][::-1].copy() for q in range(len(n))]


def joint_errors(x, y, path):
    """Per-joint distances ||p_j - r_j|| over the aligned frames of one pair -> (L, 178).

    x (n, 534), y (m, 534) flattened frames; path (L, 2) aligned frame indices (i, j).
    Computed in the inputs' precision, at least float32.
    """
    d = x[path[:, 0]].astype(np.result_type(x, y, np.float32), copy=False)
    d -= y[path[:, 1]]                                                    # (L, 534)
    d *= d
    sq = d[:, 0::3] + d[:, 1::3]
    sq += d[:, 2::3]                                                      # (L, 178) x² + y² + z²
    return np.sqrt(sq, out=sq)


def _pairs(preds, refs):
    """Checked frames and lengths of both sides: (xs, ys, n (P,), m (P,))."""
    (xs, n), (ys, m) = _frames(preds, "preds"), _frames(refs, "refs")
    if len(n) != len(m):
        raise ValueError(f"got {len(n)} predicted but {len(m)} reference sequences")
    if len(n) == 0:
        raise ValueError("preds and refs are empty")
    return xs, ys, n, m


def _align(xs, ys, n, m):
    """DTW costs (P,) and paths of checked pairs, in chunks of similar lengths (fewer padded
    cells, S of at most about CHUNK_CELLS cells); the chunking changes no result."""
    order = np.lexsort((m, n // 12))  # by n in bins of 12 frames, then by m: near-square batches
    per_chunk = max(1, CHUNK_CELLS // int((n.max() + m.max() + 1) * (n.max() + 1)))
    costs, paths = np.empty(len(n)), [None] * len(n)
    for start in range(0, len(n), per_chunk):
        idx = order[start:start + per_chunk]
        C = np.full((len(idx), n[idx].max(), m[idx].max()), np.inf)       # (P, N, M)
        for b in range(0, len(idx), FRAME_BATCH):
            batch = idx[b:b + FRAME_BATCH]
            c = frame_costs([xs[p] for p in batch], [ys[p] for p in batch],
                            [f"preds[{p}] or refs[{p}]" for p in batch])  # (B, N_b, M_b)
            C[b:b + len(batch), :c.shape[1], :c.shape[2]] = c
        S = dtw_accumulate(skew(C))
        costs[idx] = S[n[idx] + m[idx], n[idx], np.arange(len(idx))]     # D(n-1, m-1)
        for p, path in zip(idx, dtw_backtrack(S, n[idx], m[idx])):
            paths[p] = path
    return costs, paths


def dtw_align(preds, refs):
    """Exact DTW of each pair: (costs (P,) float64, paths [(L_p, 2) int arrays of (i, j)]).

    preds, refs: equally long lists of (N, 178, 3) tensors or arrays (any real dtype).
    """
    return _align(*_pairs(preds, refs))


def dtw_mje(preds, refs):
    """DTW-MJE: mean per-joint Euclidean distance over the DTW-aligned frames of all pairs.

    preds, refs: equally long lists of (N, 178, 3) tensors or arrays (any real dtype).
    """
    xs, ys, n, m = _pairs(preds, refs)
    _, paths = _align(xs, ys, n, m)
    err = sum(joint_errors(x, y, path).sum(dtype=np.float64) for x, y, path in zip(xs, ys, paths))
    return float(err / (sum(len(path) for path in paths) * NUM_JOINTS))


def sample_spread(realisations):
    """How far apart a model's samples of one sentence are: the per-joint Euclidean distance between
    two samples, frame by frame, averaged over all pairs of samples, frames and sentences.

    realisations: list of (K, N_i, 178, 3) arrays or tensors, K >= 2 → {"all": float, articulator: float}.
    """
    total, count = np.zeros(NUM_JOINTS), 0
    for x in realisations:
        x = np.asarray(x, dtype=np.float64)                               # (K, N, 178, 3)
        for a in range(len(x)):
            for b in range(a + 1, len(x)):
                total += np.linalg.norm(x[a] - x[b], axis=-1).sum(0)      # (178,) summed over frames
                count += x.shape[1]
    per_joint = total / count                                             # (178,)
    return {"all": float(per_joint.mean()), **{a: float(per_joint[ARTICULATORS[a]].mean()) for a in ARTICULATOR_ORDER}}


def sampling_report(realisations, gts, fps_step=1):
    """DTW-MJE to the ground truth of the mean (z = μ̂) and of each of the K samples, beside the spread
    between the samples; realisations: list of (mean (N_i, 178, 3), samples (K, N_i, 178, 3)),
    gts: the ground truth, already at the evaluation frame rate."""
    means = [m[::fps_step] for m, _ in realisations]
    draws = [d[:, ::fps_step] for _, d in realisations]
    per_sample = [dtw_mje([d[k] for d in draws], gts) for k in range(len(draws[0]))]
    return {"K": len(per_sample), "DTW_mean": dtw_mje(means, gts), "DTW_samples": per_sample,
            "DTW_samples_mean": float(np.mean(per_sample)), "DTW_samples_std": float(np.std(per_sample)),
            "spread": sample_spread(draws)}


def print_sampling(reports):
    print(f"| {'Model':32s} | K  | DTW↓ mean (z = μ̂) | DTW↓ samples (± std) | spread | body   | R hand | L hand | face   |")
    print("|" + "-" * 34 + "|----|-------------------|----------------------|" + "--------|" * 5)
    for r in reports:
        sp = r["spread"]
        print(f"| {r['name']:32s} | {r['K']:<2d} | {r['DTW_mean']:17.4f} | "
              f"{r['DTW_samples_mean']:.4f} ± {r['DTW_samples_std']:.4f}    | {sp['all']:.4f} | {sp['body']:.4f} | "
              f"{sp['right_hand']:.4f} | {sp['left_hand']:.4f} | {sp['face']:.4f} |")


# ---------------------------------------------------------------------------------------------
# Total Distance and Average Duration: does the prediction move as much, and as long, as the truth?
# ---------------------------------------------------------------------------------------------

WRISTS = tuple(ARTICULATORS["body"].start + BODY_JOINTS.index(j) for j in ("LWrist", "RWrist"))  # (5, 2)


def path_length(x, joint):
    """Σ_t ||x_{t+1} - x_t|| of one joint over flattened frames x (N, 534), in float64."""
    p = x[:, 3 * joint:3 * joint + 3].astype(np.float64)                  # (N, 3)
    return float(np.sqrt(np.square(np.diff(p, axis=0)).sum(1)).sum())


def total_distance(preds, refs):
    """Total Distance: for each wrist, the mean path length of the predictions over the mean path
    length of the references; the two ratios averaged. NaN if a wrist never moves in refs.

    preds, refs: equally long lists of (N, 178, 3) tensors or arrays (any real dtype).
    """
    xs, ys, _, _ = _pairs(preds, refs)
    ratios = []
    for joint in WRISTS:
        pred = np.mean([path_length(x, joint) for x in xs])
        ref = np.mean([path_length(y, joint) for y in ys])
        ratios.append(pred / ref if ref > 0 else math.nan)
    return float(np.mean(ratios))


def average_duration(preds, refs):
    """Average Duration: mean over pairs of predicted frames / reference frames."""
    _, _, n, m = _pairs(preds, refs)
    return float(np.mean(n / m))


# ---------------------------------------------------------------------------------------------
# Command line: generate with each generator (or read submissions), back-translate, score (Table 7)
# ---------------------------------------------------------------------------------------------

COLUMNS = ("DTW", "B1", "B2", "B3", "B4", "chrF", "ROUGE", "WER", "TotDist", "Dur")
ARROWS = {"DTW": "↓", "WER": "↓", "TotDist": "→1", "Dur": "→1"}   # the others: ↑ (higher is better)


def chrf_signature():
    """sacrebleu's signature of the chrF settings (it is only defined after one evaluation)."""
    metric = CHRF()
    metric.corpus_score(["a"], [["a"]])
    return str(metric.get_signature())


def load_backtranslator(path, device="cpu"):
    """SignToText rebuilt from a `train.py --stage backtranslation` checkpoint, and its frame step."""
    ckpt = load_checkpoint(path, "backtranslation")
    model = SignToText.from_config(ckpt.get("model_args") or ckpt["config"])   # "config": older checkpoints
    model.load_state_dict(ckpt["model"])
    return model.eval().to(device), ckpt.get("subsample", 2)


def back_translate(model, seqs, beam_size=3, batch_size=32, device="cpu"):
    """Texts for a list of (N, 178, 3) pose sequences (already at the evaluation frame rate)."""
    out = []
    for i in range(0, len(seqs), batch_size):
        poses, mask = pad_stack([torch.as_tensor(s, dtype=torch.float32) for s in seqs[i:i + batch_size]])
        out += model.translate(poses.to(device), mask.to(device), beam_size=beam_size)
    return out


def log_greedy_scores(model, seqs, refs):
    """Log BLEU-4 and chrF of the greedy back-translations of `seqs` (train.py's report on dev)."""
    hyps = back_translate(model.eval(), seqs, beam_size=1, device=next(model.parameters()).device)
    logging.getLogger("a2vslp").info("dev back-translation of ground truth (greedy): BLEU-4 %.2f  "
                                     "chrF %.2f", bleu(hyps, refs, 4), chrf(hyps, refs))


def score(hyps, refs, preds=None, gts=None):
    """One results row: BLEU-1..4, chrF, ROUGE-L, WER (×100) and, when poses are given (None when
    not), DTW-MJE, Total Distance and Average Duration of exactly these sequences."""
    row = {"DTW": dtw_mje(preds, gts) if preds is not None else None}
    for n in range(1, 5):
        row[f"B{n}"] = bleu(hyps, refs, n)
    row["chrF"], row["ROUGE"], row["WER"] = chrf(hyps, refs), rouge_l(hyps, refs), wer(hyps, refs)
    row["TotDist"] = total_distance(preds, gts) if preds is not None else None
    row["Dur"] = average_duration(preds, gts) if preds is not None else None
    return row


def generator_name(ckpt):
    """Row name from a generator checkpoint: phase 1 "A2V-SLP", phase 2 "A2V-SLP + KL", plus each
    hyperparameter that differs from its default (the paper's best configuration), as the config's
    labels say (harness.describe of GeneratorConfig, and of VAEConfig for the VAE it decodes with)."""
    cfg = harness.from_args(GeneratorConfig, ckpt.get("args", {}))
    name = "A2V-SLP" if cfg.phase != 2 else "A2V-SLP + KL" if cfg.kl_weight > 0 else \
        "A2V-SLP phase 2 without KL"
    extra = harness.describe(cfg) + harness.describe(VAEConfig(**ckpt.get("vae_model_args", {})))
    return name + (f" ({', '.join(extra)})" if extra else "")


def read_predictions(path, names):
    """A submission {name: Tensor[N,178,3] | {"poses_3d": ...}} (.pt, .pkl or .json) for `names`."""
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except ValueError as e:                          # bad JSON or bytes that are not UTF-8
            raise DataError(f"{path}: not a JSON file of predictions: {str(e).splitlines()[0]}") from None
    elif path.endswith(".pkl"):
        raise DataError(f"{path}: .pkl submissions are refused (unpickling can run code); "
                        "convert it to .pt or .json")
    else:
        obj = safe_load(path, what="predictions file")
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict {{name: poses}}, got {type(obj).__name__}")
    missing = [n for n in names if n not in obj]
    if missing:
        raise DataError(f"{path}: {len(missing)} sample(s) of the split have no prediction, e.g. {missing[:3]}")
    out = {}
    for n in names:
        if isinstance(obj[n], dict) and "poses_3d" not in obj[n]:
            raise DataError(f"{path}: sample {n!r}: a dict without 'poses_3d' (keys {sorted(obj[n])[:5]})")
        v = obj[n]["poses_3d"] if isinstance(obj[n], dict) else obj[n]
        if not isinstance(v, (list, np.ndarray, torch.Tensor)):
            raise DataError(f"{path}: sample {n!r}: poses are a {type(v).__name__}, expected a (N, 178, 3) array")
        try:
            v = torch.as_tensor(np.asarray(v, dtype=np.float32) if isinstance(v, list) else v).float()
        except (TypeError, ValueError, RuntimeError) as e:
            raise DataError(f"{path}: sample {n!r}: poses are not numeric ({str(e).splitlines()[0]})") from None
        if v.dim() != 3 or v.shape[1:] != (178, 3) or v.shape[0] < 1:
            raise DataError(f"{path}: sample {n!r}: shape {tuple(v.shape)}, expected (N, 178, 3)")
        if not torch.isfinite(v).all():
            raise DataError(f"{path}: sample {n!r}: non-finite values")
        out[n] = v
    return out


def print_table(rows):
    heads = [c + ARROWS.get(c, "↑") for c in COLUMNS]
    widths = [max(6, len(h)) for h in heads]
    print(f"| {'Model':32s} | " + " | ".join(f"{h:>{w}s}" for h, w in zip(heads, widths)) + " |")
    print("|" + "-" * 34 + "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        cells = [("-" if r[c] is None else f"{r[c]:.3f}" if c == "DTW" else f"{r[c]:.2f}") for c in COLUMNS]
        print(f"| {r['name']:32s} | " + " | ".join(f"{c:>{w}s}" for c, w in zip(cells, widths)) + " |")


# Defaults: the folders of train.py's flag-free runs
DATA_DIR = os.path.join("runs", "data")
GENERATORS = [os.path.join("runs", "generator", "best.pt"), os.path.join("runs", "generator-kl", "best.pt")]
BACKTRANSLATOR = os.path.join("runs", "backtranslation", "best.pt")


def most_frequent(texts):
    """The most frequent text; ties go to the one that comes first (no dependence on hashing)."""
    return Counter(texts).most_common(1)[0][0]


def finite_or_none(rows):
    """Rows with non-finite numbers (an overflowing DTW-MJE) as None: strict JSON has no Infinity."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]


def unique(name, taken, fmt="{}_{}"):
    """`name`, or fmt.format(name, k) with the least k >= 2 not in `taken`; added to `taken`."""
    k, out = 1, name
    while out in taken:
        k += 1
        out = fmt.format(name, k)
    taken.add(out)
    return out


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=DATA_DIR, help=f"release folder with the ground-truth split (default: {DATA_DIR})")
    p.add_argument("--split", default="test", help="split to score (test, dev)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--generator", nargs="+", help="generator checkpoint(s): generate, then score each "
                     f"(default: those of {', '.join(GENERATORS)} that exist)")
    src.add_argument("--predictions", nargs="+", help="submission file(s) {name: Tensor[N,178,3]} to score")
    p.add_argument("--vae", nargs="+", help="VAE checkpoint(s) (train.py --stage vae) whose reconstructions "
                   "of the ground truth to score as VAE rows, e.g. before any generator is trained")
    p.add_argument("--backtranslator", default=BACKTRANSLATOR,
                   help=f"back-translation checkpoint (train.py --stage backtranslation; default: {BACKTRANSLATOR})")
    p.add_argument("--out", default="results.json", help="results file")
    p.add_argument("--beam", type=int, default=3, help="beam size of back-translation (protocol: 3)")
    p.add_argument("--fps-step", type=int, default=2,
                   help="frame step applied to predictions and ground truth (2: 25 fps → 12.5 fps, the protocol)")
    p.add_argument("--mean", action="store_true", help="generate from the predicted means instead of sampling")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    p.add_argument("--pictures", default=None, help="folder for example pictures (needs matplotlib; made if missing); "
                   "with --generator also the per-frame predicted sigma per articulator under the example strip")
    p.add_argument("--samples", type=int, default=0, help="K >= 2: also draw K samples per sentence with each "
                   "--generator and report their DTW-MJE to the ground truth beside the spread between them")
    p.add_argument("--format", choices=["pt", "pose"], default="pt", help="pose: also write each generator's "
                   "predictions as one .pose file per sentence, in a folder beside the .pt (needs pose-format)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--cache-dir", default=None,
                   help="text-embedding cache for --generator (default: a folder 'cache' beside --out)")
    args = p.parse_args(argv)
    if args.generator is None and args.predictions is None and args.vae is None:   # train.py's flag-free runs
        args.generator = [path for path in GENERATORS if os.path.exists(path)]
        if not args.generator:
            p.error(f"no --generator, --predictions or --vae given, and none of the defaults {', '.join(GENERATORS)} exists")
        print(f"--generator {' '.join(args.generator)} (default)", flush=True)
    for flag, default in (("--data-dir", DATA_DIR), ("--backtranslator", BACKTRANSLATOR)):
        if getattr(args, flag[2:].replace("-", "_")) == default:
            print(f"{flag} {default} (default)", flush=True)
    for flag, value in (("--beam", args.beam), ("--fps-step", args.fps_step)):
        if value < 1:
            p.error(f"{flag} must be >= 1, got {value}")
    if args.samples and (args.samples < 2 or not args.generator):
        p.error(f"--samples {args.samples}: needs K >= 2 and --generator (samples are drawn from a generator)")
    if args.format == "pose":
        try:
            posefile.pose_format()
        except DataError as e:
            p.error(f"--format pose: {e}")
    sample.check_device(p, args.device)
    args.split_path = os.path.join(args.data_dir, f"{args.split}.pt")
    inputs = {"--generator": args.generator, "--predictions": args.predictions, "--vae": args.vae,
              "--backtranslator": args.backtranslator, "--data-dir": args.split_path}
    sample.check_out(p, args.out, inputs)
    args.out_dir = os.path.dirname(os.path.abspath(args.out))
    args.cache_dir = args.cache_dir or os.path.join(args.out_dir, "cache")
    return args


def score_all(args):
    """Back-translate and score GT, the VAE rows and every generator or submission of `args`; writes
    each generator's predictions beside --out. Returns a namespace: rows, baselines, sampling (the
    results) and, for the pictures, samples, generated, reconstructed, alignments, sigmas, realisations."""
    samples = load_split(args.split_path)
    names, refs = [s["name"] for s in samples], [s["text"] for s in samples]
    bt, bt_step = load_backtranslator(args.backtranslator, args.device)
    submitted = {path: read_predictions(path, names) for path in args.predictions or []}
    gts = [s["poses_3d"][::args.fps_step] for s in samples]
    if bt_step != args.fps_step:
        print(f"note: the back-translator was trained with frame step {bt_step}, scoring uses {args.fps_step}")

    def scored(name, seqs, what=""):
        print(f"back-translating {name}{what} ...", flush=True)
        return {"name": name, **score(back_translate(bt, seqs, args.beam, device=args.device), refs, seqs, gts)}

    out = argparse.Namespace(samples=samples, rows=[scored("GT", gts)], generated={}, reconstructed={},
                             alignments={}, sigmas={}, realisations={}, sampling=[])
    constant = most_frequent([s["text"] for s in load_split(os.path.join(args.data_dir, "train.pt"))])
    out.baselines = [{"name": "constant text (most frequent training sentence)", **score([constant] * len(refs), refs)}]
    vaes, row_names = [], {"GT"}
    files = {os.path.splitext(os.path.abspath(g))[0] for g in args.generator or []}   # never overwritten

    def add_vae_row(vae, path):
        """The VAE row: the ground truth through a VAE (z = μ), the ceiling of every generator it
        decodes; one row per distinct VAE, right below GT."""
        state = vae.state_dict()
        if any(all(torch.equal(state[k], v[k]) for k in state) for v in vaes):
            return
        vae_name = unique("VAE" if not vaes else f"VAE of {path}", row_names)
        vaes.append(state)
        recon = [vae.reconstruct(s["poses_3d"].to(args.device)).cpu() for s in samples]
        out.reconstructed[vae_name] = recon[0]
        out.rows.insert(len(vaes), scored(vae_name, [r[::args.fps_step] for r in recon],
                                          " (reconstructions of the ground truth, z = mu)"))

    for path in args.vae or []:
        add_vae_row(load_vae(path, args.device).eval(), path)
    for path in args.generator or args.predictions or []:
        if not args.generator:
            name, preds = unique(os.path.basename(path), row_names, "{} ({})"), submitted[path]
        else:
            model, vae, ckpt = sample.load_generator(path, args.device)
            name = unique(generator_name(ckpt), row_names, "{} ({})")
            add_vae_row(vae, path)
            print(f"generating {len(samples)} sequences with {path} ({name}) ...", flush=True)
            poses = sample.generate_poses(model, vae, refs, ckpt["bert"], not args.mean, args.seed,
                                          cache_dir=args.cache_dir, device=args.device)
            preds = dict(zip(names, poses))
            slug = re.sub(r"[^0-9A-Za-z-]+", "_", name).strip("_")
            pred_path = unique(os.path.join(args.out_dir, f"{args.split}_{slug}"), files) + ".pt"
            atomic_save(preds, pred_path)
            print(f"  wrote {pred_path}")
            if args.format == "pose":
                print(f"  wrote {len(posefile.write_pose_folder(preds, pred_path[:-3]))} .pose files to {pred_path[:-3]}")
            first = samples[0]["text"]
            if args.pictures:
                out.alignments[name] = sample.cross_attention(model, first, ckpt["bert"], args.cache_dir, args.device)
                out.sigmas[name] = sample.predicted_sigma(model, first, ckpt["bert"], args.cache_dir, args.device)
            if args.samples:
                print(f"drawing {args.samples} samples per sentence with {name} ...", flush=True)
                made = sample.generate_samples(model, vae, refs, ckpt["bert"], args.samples, args.seed,
                                               cache_dir=args.cache_dir, device=args.device)
                out.realisations[name] = made[0]
                out.sampling.append({"name": name, **sampling_report(made, gts, args.fps_step)})
        out.rows.append(scored(name, [preds[n][::args.fps_step] for n in names]))
        out.generated[name] = preds
    return out


def write_results(args, out):
    """Print the table and its notes; write --out (strict JSON, whole or not at all)."""
    rows, baselines = out.rows, out.baselines
    print()
    print_table(rows)
    print(f"\n{len(out.samples)} {args.split} sequences at 25/{args.fps_step} fps; BLEU signature: {bleu_signature()}")
    print(f"constant-text baseline: B4 {baselines[0]['B4']:.2f}, chrF {baselines[0]['chrF']:.2f}, "
          f"ROUGE {baselines[0]['ROUGE']:.2f}, WER {baselines[0]['WER']:.2f}")
    gain = rows[0]["chrF"] - baselines[0]["chrF"]
    if gain > 0 and len(rows) > 1:                  # how much of what GT reads each row keeps
        print("chrF gain over the constant text, as a share of GT's: " + ", ".join(
            f"{r['name']} {100 * (r['chrF'] - baselines[0]['chrF']) / gain:.0f} %" for r in rows[1:]))
    if out.sampling:
        print(f"\n{args.samples} samples per sentence (z = mu + sigma * eps), DTW-MJE to the ground truth "
              "and the spread between two samples (mean per-joint distance, same units):")
        print_sampling(out.sampling)
    for r in rows:
        if r["DTW"] is not None and not math.isfinite(r["DTW"]):
            print(f"note: {r['name']}: DTW-MJE overflows ({r['DTW']}); written as null in {args.out}")
        if r["TotDist"] is not None and not math.isfinite(r["TotDist"]):
            print(f"note: {r['name']}: Total Distance is {r['TotDist']} (a ground-truth wrist never moves, "
                  f"or the poses overflow); written as null in {args.out}")
    result = {"rows": finite_or_none(rows), "baselines": finite_or_none(baselines), "split": args.split,
              "num_samples": len(out.samples), "fps_step": args.fps_step, "beam": args.beam,
              "bleu_signature": bleu_signature(), "chrf_signature": chrf_signature()}
    if out.sampling:
        result["sampling"] = finite_or_none(out.sampling)
    atomic_json(result, args.out)
    print(f"wrote {args.out}")


def draw_pictures(args, out):
    """The first test sentence: pose strips and a GIF, the hands, and per generator the
    cross-attention and the predicted σ̂ (render.py; needs matplotlib)."""
    first = out.samples[0]
    os.makedirs(args.pictures, exist_ok=True)
    prefix = os.path.join(args.pictures, "example")
    files = render.render_example(first["poses_3d"].numpy(),
                                  {k: v[first["name"]].numpy() for k, v in out.generated.items()},
                                  prefix, first["text"])
    if out.reconstructed:
        render.save_hands({"ground truth": first["poses_3d"].numpy(),
                           **{k: v.numpy() for k, v in out.reconstructed.items()}},
                          prefix + "_hands.png", title="hands: ground truth and its VAE reconstruction")
        files.append(prefix + "_hands.png")
    slugs = set()
    for k, (att, tokens) in out.alignments.items():
        slug = unique("" if len(out.alignments) == 1 else "_" + "".join(c for c in k if c.isalnum()), slugs)
        pred = out.generated[k][first["name"]].numpy()
        render.save_alignment(att.numpy(), tokens, pred, f"{prefix}_alignment{slug}.png",
                              title=f"{k}: cross-attention, {first['text']}")
        strip = {"ground truth": first["poses_3d"].numpy(), k: pred}
        if k in out.realisations:                  # the mean and two of the samples
            mean, draws = out.realisations[k]
            strip = {"ground truth": strip["ground truth"], "mean (z = μ̂)": mean.numpy(),
                     **{f"sample {i + 1}": d.numpy() for i, d in enumerate(draws[:2])}}
        render.save_strip(strip, f"{prefix}_uncertainty{slug}.png", sigma=out.sigmas[k],
                          title=f"{k}: predicted σ̂ per articulator, {first['text']}")
        files += [f"{prefix}_alignment{slug}.png", f"{prefix}_uncertainty{slug}.png"]
    print("wrote", ", ".join(files))


def main(argv=None):
    args = get_args(argv)
    try:
        os.makedirs(args.out_dir, exist_ok=True)                 # --out may name a folder still to be made
        scored = score_all(args)
        write_results(args, scored)
        if args.pictures and scored.generated:
            try:
                draw_pictures(args, scored)
            except (ImportError, SystemExit) as e:
                print(f"pictures skipped: {e}")
    except (DataError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
