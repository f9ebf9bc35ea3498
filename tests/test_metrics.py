"""Tests of the evaluation metrics (evaluate.py) against sacrebleu, hand computations and naive DPs."""
import math
import os
import sys

import numpy as np
import pytest
import torch
from sacrebleu.metrics import BLEU, CHRF

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import evaluate  # noqa: E402

HYPS = ["am tag scheint die sonne im süden", "morgen regen und gewitter",
        "über den bergen schnee", "das wetter wird schön", "nachts frost"]
REFS = ["am tag scheint im süden die sonne", "morgen viel regen und örtlich gewitter",
        "über den alpen fällt schnee", "morgen wird das wetter schön", "in der nacht frost"]


# ---------------------------------------------------------------------------------------------
# BLEU, chrF
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_matches_sacrebleu(n):
    metric = BLEU(max_ngram_order=n, tokenize="none", smooth_method="floor", smooth_value=0.0,
                  effective_order=True)
    assert evaluate.bleu(HYPS, REFS, n) == pytest.approx(metric.corpus_score(HYPS, [REFS]).score)


def test_bleu_hand_computed():
    # n-gram precisions 5/6, 3/5, 1/4, 0/3; equal lengths so no brevity penalty.
    hyps, refs = ["the cat sat on the mat"], ["the cat is on the mat"]
    assert evaluate.bleu(hyps, refs, 1) == pytest.approx(100 * 5 / 6)
    assert evaluate.bleu(hyps, refs, 2) == pytest.approx(100 * math.sqrt(5 / 6 * 3 / 5))
    assert evaluate.bleu(hyps, refs, 3) == pytest.approx(50.0)  # (1/8)^(1/3)
    assert evaluate.bleu(hyps, refs, 4) == pytest.approx(0.0, abs=1e-6)  # no smoothing


def test_bleu_effective_order_on_short_hypothesis():
    # "a b" has no 3- or 4-grams: effective order keeps BLEU-4 = BLEU-2 = BP * 100.
    expected = 100 * math.exp(1 - 3 / 2)
    assert evaluate.bleu(["a b"], ["a b c"], 4) == pytest.approx(expected)
    no_eff = BLEU(max_ngram_order=4, tokenize="none", smooth_method="floor", smooth_value=0.0)
    assert no_eff.corpus_score(["a b"], [["a b c"]]).score == pytest.approx(0.0, abs=1e-6)


def test_bleu_is_case_sensitive_and_untokenized():
    assert evaluate.bleu(["Wetter"], ["wetter"], 1) == pytest.approx(0.0, abs=1e-6)
    assert evaluate.bleu(["wetter."], ["wetter ."], 1) == pytest.approx(0.0, abs=1e-6)


def test_bleu_signature():
    sig = evaluate.bleu_signature(4)
    for part in ("tok:none", "smooth:floor", "eff:yes", "case:mixed"):
        assert part in sig, sig


def test_chrf_matches_sacrebleu():
    assert evaluate.chrf(HYPS, REFS) == pytest.approx(CHRF().corpus_score(HYPS, [REFS]).score)
    assert evaluate.chrf(REFS, REFS) == pytest.approx(100.0)


@pytest.mark.parametrize("fn", [lambda h, r: evaluate.bleu(h, r, 4), evaluate.chrf,
                                evaluate.rouge_l])
def test_text_metrics_reject_bad_input(fn):
    with pytest.raises(ValueError, match="hypotheses"):
        fn(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="single string"):
        fn("a b", "a b")
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="expected str"):
        fn(["a", None], ["a", "b"])


# ---------------------------------------------------------------------------------------------
# ROUGE-L (β = 1.2)
# ---------------------------------------------------------------------------------------------

def lcs_length(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def naive_rouge_l(hyps, refs, beta=1.2):
    scores = []
    for hyp, ref in zip(hyps, refs):
        h, r = hyp.split(), ref.split()
        lcs = lcs_length(h, r)
        if lcs == 0:
            scores.append(0.0)
            continue
        p, rec = lcs / len(h), lcs / len(r)
        scores.append((1 + beta ** 2) * p * rec / (rec + beta ** 2 * p))
    return 100 * sum(scores) / len(scores)


def test_rouge_l_matches_lcs_definition():
    assert evaluate.rouge_l(HYPS, REFS) == pytest.approx(naive_rouge_l(HYPS, REFS))
    assert evaluate.rouge_l(REFS, REFS) == pytest.approx(100.0)


def test_rouge_l_keeps_umlauts_and_uses_beta_1_2():
    # LCS "über die": P = 2/2, R = 2/3 -> F_1.2 = 2.44 * (2/3) / (2/3 + 1.44)
    expected = 100 * 2.44 * (2 / 3) / (2 / 3 + 1.44)
    assert evaluate.rouge_l(["über die"], ["über die täler"]) == pytest.approx(expected)
    assert evaluate.rouge_l(["über"], ["uber"]) == 0.0
    assert evaluate.rouge_l([""], ["über"]) == 0.0


# ---------------------------------------------------------------------------------------------
# DTW-MJE
# ---------------------------------------------------------------------------------------------

def naive_accumulate(c):
    """D(i, j) = c(i, j) + min(D(i-1, j-1), D(i-1, j), D(i, j-1)) cell by cell, +inf outside."""
    n, m = c.shape
    D = np.full((n, m), np.inf)
    for i in range(n):
        for j in range(m):
            D[i, j] = c[i, j] + (0.0 if i == j == 0 else min(
                D[i - 1, j - 1] if i and j else np.inf, D[i - 1, j] if i else np.inf,
                D[i, j - 1] if j else np.inf))
    return D


def naive_backtrack(D):
    """Path from the last cell to (0, 0); ties: diagonal, then (i-1, j), then (i, j-1)."""
    n, m = D.shape
    path, i, j = [(n - 1, m - 1)], n - 1, m - 1
    while i or j:
        cands = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]
        vals = [D[a, b] if a >= 0 and b >= 0 else np.inf for a, b in cands]
        i, j = cands[int(np.argmin(vals))]  # argmin keeps the first of equal values
        path.append((i, j))
    return np.array(path[::-1])


def naive_dtw(x, y):
    """Textbook DTW on flattened float64 frames -> (cost, path)."""
    c = np.array([[math.sqrt(float(((a - b) ** 2).sum())) for b in y] for a in x])
    D = naive_accumulate(c)
    return D[-1, -1], naive_backtrack(D)


def naive_mje(preds, refs):
    dists = []
    for p, r in zip(preds, refs):
        x, y = (np.asarray(s, dtype=np.float64) for s in (p, r))
        _, path = naive_dtw(x.reshape(len(x), -1), y.reshape(len(y), -1))
        for i, j in path:
            dists.extend(np.sqrt(((x[i] - y[j]) ** 2).sum(-1)))  # one distance per joint
    return float(np.mean(dists))


def random_pairs(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    preds = [torch.randn(n, 178, 3, generator=g) for n, _ in lengths]
    refs = [torch.randn(m, 178, 3, generator=g) + 0.3 for _, m in lengths]
    return preds, refs


LENGTHS = [(1, 1), (1, 7), (6, 1), (5, 5), (9, 4), (3, 12), (13, 10), (2, 2), (8, 8)]


def test_dtw_matches_naive_dp():
    preds, refs = random_pairs(LENGTHS)
    costs, paths = evaluate.dtw_align(preds, refs)
    for p, r, cost, path in zip(preds, refs, costs, paths):
        x, y = p.double().reshape(len(p), -1).numpy(), r.double().reshape(len(r), -1).numpy()
        ref_cost, ref_path = naive_dtw(x, y)
        assert cost == pytest.approx(ref_cost, rel=1e-12)
        np.testing.assert_array_equal(path, ref_path)
    assert evaluate.dtw_mje(preds, refs) == pytest.approx(naive_mje(preds, refs), rel=1e-6)


def test_dtw_chunking_and_batching_change_nothing(monkeypatch):
    preds, refs = random_pairs(LENGTHS * 3, seed=1)
    costs, paths = evaluate.dtw_align(preds, refs)
    mje = evaluate.dtw_mje(preds, refs)
    monkeypatch.setattr(evaluate, "CHUNK_CELLS", 300)  # many small chunks
    monkeypatch.setattr(evaluate, "FRAME_BATCH", 2)
    costs2, paths2 = evaluate.dtw_align(preds, refs)
    np.testing.assert_allclose(costs2, costs, rtol=1e-12)
    for a, b in zip(paths, paths2):
        np.testing.assert_array_equal(a, b)
    assert evaluate.dtw_mje(preds, refs) == mje  # same paths, errors summed in pair order
    # one pair at a time
    singles = [evaluate.dtw_align([p], [r])[0][0] for p, r in zip(preds, refs)]
    np.testing.assert_allclose(singles, costs, rtol=1e-12)


def test_dtw_bad_pair_is_named(monkeypatch):
    preds, refs = random_pairs(LENGTHS * 2, seed=6)
    refs[13][2, 5, 1] = float("nan")
    monkeypatch.setattr(evaluate, "CHUNK_CELLS", 400)
    with pytest.raises(ValueError, match=r"preds\[13\] or refs\[13\] contains NaN or inf"):
        evaluate.dtw_mje(preds, refs)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("N, M", [(1, 1), (1, 6), (6, 1), (2, 2), (4, 9), (9, 4), (7, 7)])
def test_dtw_wavefront_matches_naive_recursion(N, M, ties):
    # ties: small integer costs, so that equal predecessors are common and the tie-break shows
    rng = np.random.default_rng(N * 10 + M)
    n = np.array([N, max(1, N - 1), N, 1])                           # shorter pairs are padded
    m = np.array([M, M, max(1, M - 2), 1])
    c = [rng.integers(0, 3, (n[p], m[p])).astype(float) if ties else rng.random((n[p], m[p]))
         for p in range(len(n))]
    C = np.full((len(n), N, M), np.inf)                               # (P, N, M), +inf padding
    for p in range(len(n)):
        C[p, :n[p], :m[p]] = c[p]
    S = evaluate.dtw_accumulate(evaluate.skew(C))
    paths = evaluate.dtw_backtrack(S, n, m)
    for p in range(len(n)):
        ref = naive_accumulate(c[p])
        i, j = np.indices(ref.shape)
        np.testing.assert_array_equal(S[i + j + 2, i + 1, p], ref)  # same sums, same order
        np.testing.assert_array_equal(paths[p], naive_backtrack(ref))
        assert paths[p][0].tolist() == [0, 0] and paths[p][-1].tolist() == [n[p] - 1, m[p] - 1]
        steps = np.diff(paths[p], axis=0)
        assert ((steps >= 0) & (steps <= 1)).all() and (steps.sum(1) >= 1).all()
        assert sum(c[p][a, b] for a, b in paths[p]) == pytest.approx(ref[-1, -1], rel=1e-12)


def test_dtw_mje_zero_for_identical_and_time_warped_copies():
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(20, 178, 3, generator=g)
    assert evaluate.dtw_mje([ref], [ref.clone()]) == 0.0
    # delayed start, a held frame and a doubled ending: a warped copy aligns at zero cost
    idx = [0, 0, 0] + list(range(1, 10)) + [9, 9] + list(range(10, 20)) + [19]
    warped = ref[idx]
    assert evaluate.dtw_mje([warped], [ref]) == pytest.approx(0.0, abs=1e-12)
    assert evaluate.dtw_mje([ref], [warped]) == pytest.approx(0.0, abs=1e-12)
    assert evaluate.dtw_align([warped], [ref])[0][0] == 0.0  # near-equal frames: exact costs


def test_dtw_costs_exact_for_near_equal_frames():
    # tiny differences on top of large coordinates: the regime where |x|² + |y|² - 2x·y cancels
    g = torch.Generator().manual_seed(4)
    refs = [torch.randn(n, 178, 3, generator=g, dtype=torch.float64) * 10 + 100 for n in (6, 9)]
    preds = [r + 1e-7 * torch.randn(r.shape, generator=g, dtype=torch.float64) for r in refs]
    costs, _ = evaluate.dtw_align(preds, refs)
    for p, r, cost in zip(preds, refs, costs):
        ref_cost, _ = naive_dtw(p.reshape(len(p), -1).numpy(), r.reshape(len(r), -1).numpy())
        assert cost == pytest.approx(ref_cost, rel=1e-9)


def test_dtw_mje_hand_computed():
    # one predicted frame against two reference frames: both reference frames align to it
    pred = np.zeros((1, 178, 3))
    ref = np.zeros((2, 178, 3))
    ref[0, :, 0] = 3.0  # every joint 3 away
    ref[1, :, 1] = 4.0  # every joint 4 away
    assert evaluate.dtw_mje([pred], [ref]) == pytest.approx(3.5)


def test_dtw_tie_break_prefers_diagonal():
    frame = np.ones((1, 178, 3))
    seq = np.concatenate([frame, frame])  # all local costs zero: every step is a tie
    _, paths = evaluate.dtw_align([seq], [seq])
    np.testing.assert_array_equal(paths[0], [[0, 0], [1, 1]])


def test_dtw_mje_accepts_float16_and_numpy():
    preds, refs = random_pairs([(7, 5), (4, 9)], seed=3)
    p16 = [p.half() for p in preds]
    r_np = [r.numpy().astype(np.float16) for r in refs]
    expected = naive_mje([p.float().numpy() for p in p16], [r.astype(np.float32) for r in r_np])
    assert evaluate.dtw_mje(p16, r_np) == pytest.approx(expected, rel=1e-6)
    f64 = [p.double().numpy() for p in preds], [r.double() for r in refs]
    assert evaluate.dtw_mje(*f64) == pytest.approx(naive_mje(preds, refs), rel=1e-10)


def test_dtw_mje_rejects_bad_input():
    good = torch.zeros(4, 178, 3)
    with pytest.raises(ValueError, match="2 predicted but 1 reference"):
        evaluate.dtw_mje([good, good], [good])
    with pytest.raises(ValueError, match="empty"):
        evaluate.dtw_mje([], [])
    with pytest.raises(ValueError, match=r"refs\[0\] must have shape"):
        evaluate.dtw_mje([good], [torch.zeros(4, 177, 3)])
    with pytest.raises(ValueError, match=r"preds\[0\] must have shape"):
        evaluate.dtw_mje([torch.zeros(0, 178, 3)], [good])
    with pytest.raises(ValueError, match=r"preds\[0\] must have shape"):
        evaluate.dtw_mje([torch.zeros(4, 534)], [good])
    with pytest.raises(ValueError, match="must be a list"):
        evaluate.dtw_mje(good, good)
    bad = good.clone()
    bad[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate.dtw_mje([good, good], [good, bad])
