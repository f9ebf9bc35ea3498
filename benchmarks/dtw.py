"""Speed and exactness of the DTW behind DTW-MJE (§4.2), on test-set-sized random data.

    python benchmarks/dtw.py                      # 642 pairs, lengths 40-100, 178×3 joints
    pip install fastdtw                           # optional: time the challenge's way side by side

Times metrics.dtw_mje (exact DTW, one vectorised numpy step per anti-diagonal for a chunk of
pairs, one thread of Python) on all pairs and, if the fastdtw package is installed
(it is not a dependency; `make bench` installs it), the challenge's DTW-MJE as its evaluation code
computes it (fastdtw with radius 1 and a per-cell Python distance that turns both frames into torch
tensors, then the per-joint errors along that path) on a subset of the pairs, alternating, for
--rounds rounds: this shared machine's speed drifts by tens of percent from second to second, so
medians and per-round ratios are reported. Also timed once, on subsets (time per pair
extrapolated): fastdtw with scipy's euclidean as the distance, and a naive pure-Python O(nm) DP
whose DTW costs and paths are compared with metrics.dtw_align. The challenge's DTW-MJE is quoted
at ~35 ms per pair on the project machine.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import metrics  # noqa: E402

QUOTED_FASTDTW_MS = 35.0  # challenge's fastdtw DTW-MJE per 40-100-frame pair on this machine


def random_pairs(num, lo, hi, seed):
    """num pairs of random-walk pose sequences (N, 178, 3) float32 with lengths in [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (num, 2), generator=g)

    def walk(n):
        return (0.05 * torch.randn(n, metrics.NUM_JOINTS, 3, generator=g)).cumsum(0)

    return [walk(int(n)) for n, _ in lengths], [walk(int(m)) for _, m in lengths]


def naive_dtw(x, y):
    """Textbook O(nm) DTW in pure Python with a per-cell distance call; returns (cost, path)."""
    x, y = x.reshape(len(x), -1).double().numpy(), y.reshape(len(y), -1).double().numpy()
    n, m = len(x), len(y)
    inf = float("inf")
    D = [[inf] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            c = float(np.linalg.norm(x[i] - y[j]))
            if i == 0 and j == 0:
                D[i][j] = c
                continue
            D[i][j] = c + min(D[i - 1][j - 1] if i and j else inf,
                              D[i - 1][j] if i else inf,
                              D[i][j - 1] if j else inf)
    path, i, j = [(n - 1, m - 1)], n - 1, m - 1
    while i or j:
        options = [(D[i - 1][j - 1] if i and j else inf, i - 1, j - 1),
                   (D[i - 1][j] if i else inf, i - 1, j),
                   (D[i][j - 1] if j else inf, i, j - 1)]
        _, i, j = min(options, key=lambda o: o[0])  # first minimum: diagonal, up, left
        path.append((i, j))
    return D[n - 1][m - 1], np.array(path[::-1])


def challenge_distance(a, b):
    """Per-cell distance as the challenge's evaluation computes it: two torch tensors, then the root
    of the summed squared differences (a handful of tensor ops per DTW cell)."""
    return torch.tensor(a).sub(torch.tensor(b)).square().sum().sqrt()


def fastdtw_mje(fastdtw, dist, x, y):
    """fastdtw (radius 1) path with `dist`, then the per-joint errors along it -> (cost, MJE)."""
    cost, path = fastdtw(x, y, radius=1, dist=dist)
    i, j = np.array(path).T
    err = np.linalg.norm((x[i] - y[j]).reshape(len(i), -1, 3), axis=-1)  # (L, 178)
    return float(cost), err.mean()


def timed(fn, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pairs", type=int, default=642, help="number of pairs (PHOENIX test: 642)")
    p.add_argument("--min-len", type=int, default=40, help="shortest sequence, frames")
    p.add_argument("--max-len", type=int, default=100, help="longest sequence, frames")
    p.add_argument("--naive-pairs", type=int, default=10, help="pairs timed with the naive DP")
    p.add_argument("--fastdtw-pairs", type=int, default=20, help="pairs timed with fastdtw")
    p.add_argument("--rounds", type=int, default=9,
                   help="rounds of dtw_mje on all pairs, each followed by the challenge's DTW-MJE "
                        "on --fastdtw-pairs pairs; medians and per-round ratios are reported")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    args = p.parse_args()

    preds, refs = random_pairs(args.pairs, args.min_len, args.max_len, args.seed)
    print(f"{args.pairs} random pairs, lengths {args.min_len}-{args.max_len}, "
          f"{metrics.NUM_JOINTS}x3 joints; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    try:
        from fastdtw import fastdtw
        from scipy.spatial.distance import euclidean
    except ImportError:
        fastdtw = None
        print("fastdtw is not installed (pip install fastdtw): the challenge's DTW-MJE is only quoted")
    k2 = min(args.fastdtw_pairs, args.pairs)
    xs = [x.reshape(len(x), -1).double().numpy() for x in preds[:k2]]
    ys = [y.reshape(len(y), -1).double().numpy() for y in refs[:k2]]

    def challenge():
        return [fastdtw_mje(fastdtw, challenge_distance, x, y) for x, y in zip(xs, ys)]

    ours, theirs = [], []                 # (wall, cpu) per round; the two alternate, side by side
    for _ in range(args.rounds):
        mje, wall, cpu = timed(metrics.dtw_mje, preds, refs)
        ours.append((wall, cpu))
        if fastdtw is not None:
            fast, wall, cpu = timed(challenge)
            theirs.append((wall, cpu))

    def median(runs, num):                # median wall and CPU time per pair, ms
        return tuple(1000 * float(np.median([r[i] for r in runs])) / num for i in (0, 1))

    rows = [(f"metrics.dtw_mje (exact), median of {args.rounds} rounds", args.pairs,
             *median(ours, args.pairs)),
            (f"metrics.dtw_mje (exact), fastest of {args.rounds} rounds", args.pairs,
             *(1000 * t / args.pairs for t in min(ours)))]
    refs_ms = {}                          # reference ms/pair the speed-up columns divide
    if fastdtw is not None:
        rows.append((f"challenge's DTW-MJE: fastdtw r=1, per-cell torch distance, median of "
                     f"{args.rounds}", k2, *median(theirs, k2)))
        refs_ms["challenge measured here"] = rows[-1][2]
        _, f_wall, f_cpu = timed(lambda: [fastdtw_mje(fastdtw, euclidean, x, y)
                                          for x, y in zip(xs, ys)])
        rows.append(("fastdtw r=1 with scipy's euclidean", k2, 1000 * f_wall / k2, 1000 * f_cpu / k2))
    refs_ms["quoted 35 ms/pair"] = QUOTED_FASTDTW_MS

    k = min(args.naive_pairs, args.pairs)
    naive, n_wall, n_cpu = timed(lambda: [naive_dtw(x, y) for x, y in zip(preds[:k], refs[:k])])
    rows.append(("naive pure-Python O(nm) DP", k, 1000 * n_wall / k, 1000 * n_cpu / k))
    rows.append(("challenge's DTW-MJE (quoted figure, not run)", 0, QUOTED_FASTDTW_MS, None))

    print(f"\n| method | pairs timed | total for {args.pairs} pairs | ms/pair (wall) | ms/pair (CPU) | "
          + " | ".join(f"speed-up vs {k}" for k in refs_ms) + " |")
    print("| --- |" + " ---: |" * (4 + len(refs_ms)))
    for name, num, ms, cpu in rows:
        total = (f"{ms * num / 1000:.3f} s" if num == args.pairs
                 else f"{ms * args.pairs / 1000:.1f} s " + ("(extrap.)" if num else "(quoted)"))
        cpu = f"{cpu:.3f}" if cpu is not None else "-"
        print(f"| {name} | {num or '-'} | {total} | {ms:.3f} | {cpu} | "
              + " | ".join(f"{r / ms:.1f}x" for r in refs_ms.values()) + " |")

    if theirs:
        ratios = sorted((t[0] / k2) / (o[0] / args.pairs) for o, t in zip(ours, theirs))
        print(f"\nper round, challenge ms/pair over ours (measured one right after the other): "
              f"median {np.median(ratios):.1f}x, lowest {ratios[0]:.1f}x, highest {ratios[-1]:.1f}x")
    print(f"DTW-MJE of the random pairs: {mje:.6f}")
    costs, paths = metrics.dtw_align(preds[:k], refs[:k])
    ref_costs = np.array([c for c, _ in naive])
    rel = np.abs(costs - ref_costs).max() / ref_costs.max()
    same = sum(np.array_equal(a, b) for a, b in zip(paths, [pth for _, pth in naive]))
    print(f"exactness vs naive DP on {k} pairs: max relative DTW-cost difference {rel:.2e}, "
          f"identical warping paths {same}/{k}")
    if fastdtw is not None:
        exact = metrics.dtw_align(preds[:k2], refs[:k2])[0]
        ratio = np.array([c for c, _ in fast]) / exact
        print(f"fastdtw cost / exact cost on {k2} pairs: min {ratio.min():.4f}, "
              f"mean {ratio.mean():.4f} (exact DTW is never costlier)")


if __name__ == "__main__":
    main()
