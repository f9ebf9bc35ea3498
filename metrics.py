"""The metrics of A²V-SLP's evaluation (§4.2, Table 7): back-translation text scores, DTW-MJE and
the challenge's motion columns. evaluate.py generates, back-translates and calls these.

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
is the caller's job; evaluate.py does it (--fps-step 2, on by default for 25 fps data), so
DTW-MJE, TotDist and Dur all see the same subsampled sequences (Dur is then ⌈n/2⌉ / ⌈m/2⌉ per pair).

    python benchmarks/dtw.py                        # the DTW-MJE speed, beside the challenge's
"""
import math
import unicodedata

import numpy as np
import torch
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

from data import ARTICULATOR_ORDER, ARTICULATORS, BODY_JOINTS, NUM_JOINTS

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
# One results row
# ---------------------------------------------------------------------------------------------

COLUMNS = ("DTW", "B1", "B2", "B3", "B4", "chrF", "ROUGE", "WER", "TotDist", "Dur")
ARROWS = {"DTW": "↓", "WER": "↓", "TotDist": "→1", "Dur": "→1"}   # the others: ↑ (higher is better)


def chrf_signature():
    """sacrebleu's signature of the chrF settings (it is only defined after one evaluation)."""
    metric = CHRF()
    metric.corpus_score(["a"], [["a"]])
    return str(metric.get_signature())


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
