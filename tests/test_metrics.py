"""Tests of the evaluation metrics (metrics.py) against sacrebleu, nltk, hand computations, closed
forms, naive DPs and per-frame loops."""
import functools
import math
import os
import random
import sys

import numpy as np
import pytest
import torch
from nltk.metrics.distance import edit_distance as nltk_edit_distance
from sacrebleu.metrics import BLEU, CHRF

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import evaluate  # noqa: E402
import metrics  # noqa: E402

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
    assert metrics.bleu(HYPS, REFS, n) == pytest.approx(metric.corpus_score(HYPS, [REFS]).score)


def test_bleu_hand_computed():
    # n-gram precisions 5/6, 3/5, 1/4, 0/3; equal lengths so no brevity penalty.
    hyps, refs = ["the cat sat on the mat"], ["the cat is on the mat"]
    assert metrics.bleu(hyps, refs, 1) == pytest.approx(100 * 5 / 6)
    assert metrics.bleu(hyps, refs, 2) == pytest.approx(100 * math.sqrt(5 / 6 * 3 / 5))
    assert metrics.bleu(hyps, refs, 3) == pytest.approx(50.0)  # (1/8)^(1/3)
    assert metrics.bleu(hyps, refs, 4) == pytest.approx(0.0, abs=1e-6)  # no smoothing


def test_bleu_effective_order_on_short_hypothesis():
    # "a b" has no 3- or 4-grams: effective order keeps BLEU-4 = BLEU-2 = BP * 100.
    expected = 100 * math.exp(1 - 3 / 2)
    assert metrics.bleu(["a b"], ["a b c"], 4) == pytest.approx(expected)
    no_eff = BLEU(max_ngram_order=4, tokenize="none", smooth_method="floor", smooth_value=0.0)
    assert no_eff.corpus_score(["a b"], [["a b c"]]).score == pytest.approx(0.0, abs=1e-6)


def test_bleu_is_case_sensitive_and_untokenized():
    assert metrics.bleu(["Wetter"], ["wetter"], 1) == pytest.approx(0.0, abs=1e-6)
    assert metrics.bleu(["wetter."], ["wetter ."], 1) == pytest.approx(0.0, abs=1e-6)


def test_bleu_signature():
    sig = metrics.bleu_signature(4)
    for part in ("tok:none", "smooth:floor", "eff:yes", "case:mixed"):
        assert part in sig, sig


def test_chrf_matches_sacrebleu():
    assert metrics.chrf(HYPS, REFS) == pytest.approx(CHRF().corpus_score(HYPS, [REFS]).score)
    assert metrics.chrf(REFS, REFS) == pytest.approx(100.0)


@pytest.mark.parametrize("fn", [lambda h, r: metrics.bleu(h, r, 4), metrics.chrf,
                                metrics.rouge_l, metrics.wer])
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
    assert metrics.rouge_l(HYPS, REFS) == pytest.approx(naive_rouge_l(HYPS, REFS))
    assert metrics.rouge_l(REFS, REFS) == pytest.approx(100.0)


def test_rouge_l_keeps_umlauts_and_uses_beta_1_2():
    # LCS "über die": P = 2/2, R = 2/3 -> F_1.2 = 2.44 * (2/3) / (2/3 + 1.44)
    expected = 100 * 2.44 * (2 / 3) / (2 / 3 + 1.44)
    assert metrics.rouge_l(["über die"], ["über die täler"]) == pytest.approx(expected)
    assert metrics.rouge_l(["über"], ["uber"]) == 0.0
    assert metrics.rouge_l([""], ["über"]) == 0.0


# ---------------------------------------------------------------------------------------------
# WER
# ---------------------------------------------------------------------------------------------

def naive_edit_distance(hyp, ref):
    """Levenshtein distance by recursion from the front of both word lists."""
    @functools.lru_cache(maxsize=None)
    def d(i, j):                                      # distance of hyp[i:] to ref[j:]
        if i == len(hyp) or j == len(ref):
            return (len(hyp) - i) + (len(ref) - j)
        return min(d(i + 1, j + 1) + (hyp[i] != ref[j]), d(i + 1, j) + 1, d(i, j + 1) + 1)
    return d(0, 0)


def random_sentences(rng, count, vocab=("a", "b", "c", "d", "e")):
    return [[rng.choice(vocab) for _ in range(rng.randint(0, 9))] for _ in range(count)]


def test_edit_distance_matches_naive_recursion_and_nltk():
    rng = random.Random(0)
    hyps, refs = random_sentences(rng, 300), random_sentences(rng, 300)
    for h, r in zip(hyps, refs):
        assert metrics.edit_distance(h, r) == naive_edit_distance(h, r) == nltk_edit_distance(h, r)


def test_wer_is_corpus_level_edits_over_reference_words():
    rng = random.Random(1)
    hyps, refs = random_sentences(rng, 50), random_sentences(rng, 50)
    refs[0] = refs[0] or ["a"]                        # at least one reference word
    expected = 100 * sum(map(naive_edit_distance, hyps, refs)) / sum(map(len, refs))
    assert metrics.wer([" ".join(h) for h in hyps], [" ".join(r) for r in refs]) == pytest.approx(expected)
    # one sentence with 1 error in 1 word, one with 0 in 4: corpus 1/5, not the mean 1/2 of sentence rates
    assert metrics.wer(["a", "a b c d"], ["b", "a b c d"]) == pytest.approx(20.0)


@pytest.mark.parametrize("hyp, ref, expected", [
    ("am tag sonne", "am tag sonne", 0.0),
    ("am abend sonne", "am tag sonne", 100 / 3),               # one substitution
    ("am tag viel sonne", "am tag sonne", 100 / 3),            # one insertion
    ("am sonne", "am tag sonne", 100 / 3),                     # one deletion
    ("", "am tag sonne", 100.0),                               # empty hypothesis: all deleted
    ("sonne tag am", "am tag sonne", 200 / 3),                 # reversed: two substitutions
    ("regen und sturm im norden", "regen", 400.0),             # four insertions: WER above 100
    ("Am Tag, SONNE!", "am tag sonne", 0.0),                   # case and punctuation
    ("über  den\talpen\n schnee .", "Über den Alpen Schnee", 0.0),   # whitespace, umlauts, lone "."
    ("„Föhn“ im Süden…", "föhn im süden", 0.0),                # German quotes, ellipsis
    ("nord-west", "nordwest", 0.0),                            # punctuation is removed, not spaced
    ("grüße", "gruße", 100.0),                                 # umlauts are letters, not dropped
    ("Привет, мир!", "привет мир", 0.0),                       # any script
])
def test_wer_hand_computed(hyp, ref, expected):
    assert metrics.wer([hyp], [ref]) == pytest.approx(expected)


def test_wer_needs_reference_words():
    with pytest.raises(ValueError, match="no words"):
        metrics.wer(["a"], [" . !"])


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
    costs, paths = metrics.dtw_align(preds, refs)
    for p, r, cost, path in zip(preds, refs, costs, paths):
        x, y = p.double().reshape(len(p), -1).numpy(), r.double().reshape(len(r), -1).numpy()
        ref_cost, ref_path = naive_dtw(x, y)
        assert cost == pytest.approx(ref_cost, rel=1e-12)
        np.testing.assert_array_equal(path, ref_path)
    assert metrics.dtw_mje(preds, refs) == pytest.approx(naive_mje(preds, refs), rel=1e-6)


def test_dtw_chunking_and_batching_change_nothing(monkeypatch):
    preds, refs = random_pairs(LENGTHS * 3, seed=1)
    costs, paths = metrics.dtw_align(preds, refs)
    mje = metrics.dtw_mje(preds, refs)
    monkeypatch.setattr(metrics, "CHUNK_CELLS", 300)  # many small chunks
    monkeypatch.setattr(metrics, "FRAME_BATCH", 2)
    costs2, paths2 = metrics.dtw_align(preds, refs)
    np.testing.assert_allclose(costs2, costs, rtol=1e-12)
    for a, b in zip(paths, paths2):
        np.testing.assert_array_equal(a, b)
    assert metrics.dtw_mje(preds, refs) == mje  # same paths, errors summed in pair order
    # one pair at a time
    singles = [metrics.dtw_align([p], [r])[0][0] for p, r in zip(preds, refs)]
    np.testing.assert_allclose(singles, costs, rtol=1e-12)


def test_dtw_bad_pair_is_named(monkeypatch):
    preds, refs = random_pairs(LENGTHS * 2, seed=6)
    refs[13][2, 5, 1] = float("nan")
    monkeypatch.setattr(metrics, "CHUNK_CELLS", 400)
    with pytest.raises(ValueError, match=r"preds\[13\] or refs\[13\] contains NaN or inf"):
        metrics.dtw_mje(preds, refs)


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
    S = metrics.dtw_accumulate(metrics.skew(C))
    paths = metrics.dtw_backtrack(S, n, m)
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
    assert metrics.dtw_mje([ref], [ref.clone()]) == 0.0
    # delayed start, a held frame and a doubled ending: a warped copy aligns at zero cost
    idx = [0, 0, 0] + list(range(1, 10)) + [9, 9] + list(range(10, 20)) + [19]
    warped = ref[idx]
    assert metrics.dtw_mje([warped], [ref]) == pytest.approx(0.0, abs=1e-12)
    assert metrics.dtw_mje([ref], [warped]) == pytest.approx(0.0, abs=1e-12)
    assert metrics.dtw_align([warped], [ref])[0][0] == 0.0  # near-equal frames: exact costs


def test_dtw_costs_exact_for_near_equal_frames():
    # tiny differences on top of large coordinates: the regime where |x|² + |y|² - 2x·y cancels
    g = torch.Generator().manual_seed(4)
    refs = [torch.randn(n, 178, 3, generator=g, dtype=torch.float64) * 10 + 100 for n in (6, 9)]
    preds = [r + 1e-7 * torch.randn(r.shape, generator=g, dtype=torch.float64) for r in refs]
    costs, _ = metrics.dtw_align(preds, refs)
    for p, r, cost in zip(preds, refs, costs):
        ref_cost, _ = naive_dtw(p.reshape(len(p), -1).numpy(), r.reshape(len(r), -1).numpy())
        assert cost == pytest.approx(ref_cost, rel=1e-9)


def test_dtw_mje_hand_computed():
    # one predicted frame against two reference frames: both reference frames align to it
    pred = np.zeros((1, 178, 3))
    ref = np.zeros((2, 178, 3))
    ref[0, :, 0] = 3.0  # every joint 3 away
    ref[1, :, 1] = 4.0  # every joint 4 away
    assert metrics.dtw_mje([pred], [ref]) == pytest.approx(3.5)


def test_dtw_tie_break_prefers_diagonal():
    frame = np.ones((1, 178, 3))
    seq = np.concatenate([frame, frame])  # all local costs zero: every step is a tie
    _, paths = metrics.dtw_align([seq], [seq])
    np.testing.assert_array_equal(paths[0], [[0, 0], [1, 1]])


def test_dtw_mje_accepts_float16_and_numpy():
    preds, refs = random_pairs([(7, 5), (4, 9)], seed=3)
    p16 = [p.half() for p in preds]
    r_np = [r.numpy().astype(np.float16) for r in refs]
    expected = naive_mje([p.float().numpy() for p in p16], [r.astype(np.float32) for r in r_np])
    assert metrics.dtw_mje(p16, r_np) == pytest.approx(expected, rel=1e-6)
    f64 = [p.double().numpy() for p in preds], [r.double() for r in refs]
    assert metrics.dtw_mje(*f64) == pytest.approx(naive_mje(preds, refs), rel=1e-10)


def test_dtw_mje_rejects_bad_input():
    good = torch.zeros(4, 178, 3)
    with pytest.raises(ValueError, match="2 predicted but 1 reference"):
        metrics.dtw_mje([good, good], [good])
    with pytest.raises(ValueError, match="empty"):
        metrics.dtw_mje([], [])
    with pytest.raises(ValueError, match=r"refs\[0\] must have shape"):
        metrics.dtw_mje([good], [torch.zeros(4, 177, 3)])
    with pytest.raises(ValueError, match=r"preds\[0\] must have shape"):
        metrics.dtw_mje([torch.zeros(0, 178, 3)], [good])
    with pytest.raises(ValueError, match=r"preds\[0\] must have shape"):
        metrics.dtw_mje([torch.zeros(4, 534)], [good])
    with pytest.raises(ValueError, match="must be a list"):
        metrics.dtw_mje(good, good)
    bad = good.clone()
    bad[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.dtw_mje([good, good], [good, bad])


# ---------------------------------------------------------------------------------------------
# Total Distance, Average Duration
# ---------------------------------------------------------------------------------------------

def naive_path(seq, joint):
    """Path length of one joint, frame by frame."""
    seq = np.asarray(seq, dtype=np.float64)
    total = 0.0
    for t in range(len(seq) - 1):
        total += math.sqrt(sum((seq[t + 1, joint, k] - seq[t, joint, k]) ** 2 for k in range(3)))
    return total


def naive_total_distance(preds, refs):
    ratios = []
    for joint in (5, 2):                                # LWrist, RWrist of the 178 layout
        pred = sum(naive_path(p, joint) for p in preds) / len(preds)
        ref = sum(naive_path(r, joint) for r in refs) / len(refs)
        ratios.append(pred / ref)
    return (ratios[0] + ratios[1]) / 2


def test_wrists_are_the_body_wrists_of_the_layout():
    from data import JOINT_NAMES
    assert metrics.WRISTS == (5, 2)
    assert [JOINT_NAMES[j] for j in metrics.WRISTS] == ["LWrist", "RWrist"]


def test_total_distance_matches_a_per_frame_loop():
    preds, refs = random_pairs(LENGTHS, seed=5)
    assert metrics.total_distance(preds, refs) == pytest.approx(naive_total_distance(preds, refs), rel=1e-9)
    # only the wrists count: moving every other joint changes nothing
    moved = [p.clone() for p in preds]
    others = [j for j in range(178) if j not in (2, 5)]
    for p in moved:
        p[:, others] = torch.randn(len(p), len(others), 3, generator=torch.Generator().manual_seed(len(p))) * 9
    assert metrics.total_distance(moved, refs) == pytest.approx(metrics.total_distance(preds, refs), rel=1e-12)


def straight_line(steps, v_left, v_right):
    """steps + 1 frames: both wrists move at constant velocity (path steps·|v|), the rest still."""
    seq = np.zeros((steps + 1, 178, 3))
    t = np.arange(steps + 1)[:, None]
    seq[:, 5], seq[:, 2] = 1.0 + t * np.array(v_left), -1.0 + t * np.array(v_right)
    return seq


def test_total_distance_closed_form_for_straight_lines():
    v_left, v_right = (0.03, -0.04, 0.0), (0.0, 0.01, 0.0)         # |v| = 0.05 and 0.01
    gts = [straight_line(40, v_left, v_right), straight_line(10, v_left, v_right)]
    # left: mean path (40 + 10)·0.05 / 2 = 1.25; right (40 + 10)·0.01 / 2 = 0.25
    slow = [straight_line(20, (0.0, 0.0, 0.05), (0.01, 0.0, 0.0)), straight_line(30, (0.05, 0, 0), (0, 0, 0))]
    # prediction left: (20 + 30)·0.05 / 2 = 1.25 -> ratio 1; right: 20·0.01 / 2 = 0.1 -> ratio 0.4
    assert metrics.total_distance(slow, gts) == pytest.approx((1.0 + 0.4) / 2, rel=1e-12)
    assert metrics.total_distance(gts, gts) == 1.0
    frozen = [np.repeat(g[:1], len(g), axis=0) for g in gts]          # the first pose, held
    assert metrics.total_distance(frozen, gts) == 0.0
    # a straight line keeps its length under [::2] (even step counts): the metric at 12.5 fps
    sub = [g[::2] for g in gts]
    assert [metrics.path_length(s.reshape(len(s), -1), 5) for s in sub] == pytest.approx([2.0, 0.5])
    # a mean over sequences, then the ratio: not the mean of per-sequence ratios
    one = straight_line(10, (0.1, 0, 0), (0.1, 0, 0))                  # path 1 for both wrists
    three = straight_line(10, (0.3, 0, 0), (0.3, 0, 0))                # path 3
    assert metrics.total_distance([one, one], [one, three]) == pytest.approx(0.5)


def test_total_distance_of_a_still_ground_truth_is_nan_and_checks_its_input():
    still = np.zeros((5, 178, 3))
    assert math.isnan(metrics.total_distance([straight_line(4, (1, 0, 0), (1, 0, 0))], [still]))
    with pytest.raises(ValueError, match="2 predicted but 1 reference"):
        metrics.total_distance([still, still], [still])
    preds, refs = random_pairs([(6, 4), (3, 9)], seed=7)
    p16, r_np = [p.half() for p in preds], [r.numpy() for r in refs]          # any real dtype, torch or numpy
    assert metrics.total_distance(p16, r_np) == pytest.approx(
        naive_total_distance([p.float().numpy() for p in p16], r_np), rel=1e-6)


def test_average_duration_hand_computed():
    preds = [np.zeros((n, 178, 3)) for n in (10, 5, 30)]
    gts = [np.zeros((m, 178, 3)) for m in (20, 5, 10)]
    assert metrics.average_duration(preds, gts) == pytest.approx((0.5 + 1 + 3) / 3)   # not 45 / 35
    assert metrics.average_duration(gts, gts) == 1.0
    with pytest.raises(ValueError, match=r"preds\[0\] must have shape"):
        metrics.average_duration([np.zeros((0, 178, 3))], gts[:1])


# ---------------------------------------------------------------------------------------------
# Results rows and the printed table
# ---------------------------------------------------------------------------------------------

def test_score_rows_hold_every_column_and_the_table_prints_them(capsys):
    preds, gts = [straight_line(8, (0.1, 0, 0), (0, 0.1, 0))], [straight_line(16, (0.1, 0, 0), (0, 0.1, 0))]
    row = metrics.score(["am tag regen ."], ["Am Tag viel Regen"], preds, gts)
    assert tuple(row) == metrics.COLUMNS
    assert row["WER"] == pytest.approx(25.0)                       # one deletion in four words
    assert row["TotDist"] == pytest.approx(0.5) and row["Dur"] == pytest.approx(9 / 17)
    assert row["DTW"] == pytest.approx(naive_mje(preds, gts))
    text_only = metrics.score(["am tag"], ["am tag"])               # the constant-text baseline
    assert text_only["WER"] == 0.0 and text_only["DTW"] is text_only["TotDist"] is text_only["Dur"] is None
    evaluate.print_table([{"name": "GT", **row}, {"name": "constant text", **text_only}])
    lines = capsys.readouterr().out.splitlines()
    assert len({len(line) for line in lines}) == 1                   # aligned columns
    heads = [c.strip() for c in lines[0].split("|")[2:-1]]
    assert heads == ["DTW↓", "B1↑", "B2↑", "B3↑", "B4↑", "chrF↑", "ROUGE↑", "WER↓", "TotDist→1", "Dur→1"]
    cells = [c.strip() for c in lines[2].split("|")[2:-1]]
    assert cells[-3:] == ["25.00", "0.50", "0.53"]
    assert [c.strip() for c in lines[3].split("|")[2:-1]][-3:] == ["0.00", "-", "-"]
