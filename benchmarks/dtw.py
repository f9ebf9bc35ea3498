"""Speed and exactness of the DTW behind DTW-MJE (§4.2), on test-set-sized random data.

    python benchmarks/dtw.py                      # 642 pairs, lengths 40-100, 178×3 joints
    python benchmarks/dtw.py --threads 1          # pin torch (and the DTW workers) to one thread
    pip install fastdtw                           # optional: time the challenge's way side by side

Times evaluate.dtw_mje (exact DTW, anti-diagonal wavefront batched over pairs, chunks of pairs on
up to torch.get_num_threads() worker threads) on all pairs, --repeats times: the table shows the
fastest run, the line below it the median too (this shared machine's timings drift by tens of
percent). Beside it, on a subset of the pairs (time per pair extrapolated): a naive pure-Python
O(nm) DP, whose DTW costs and paths are compared with evaluate.dtw_align, and, if the fastdtw
package is installed (it is not a dependency; `make bench` installs it), the challenge's
DTW-MJE as its evaluation code computes it: fastdtw with radius 1 and a per-cell Python distance
that turns both frames into torch tensors, then the per-joint errors along that path; and the
same with scipy's euclidean as the distance. The challenge's DTW-MJE is quoted at ~35 ms per pair
on the project machine.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import evaluate  # noqa: E402

QUOTED_FASTDTW_MS = 35.0  # challenge's fastdtw DTW-MJE per 40-100-frame pair on this machine


def random_pairs(num, lo, hi, seed):
    """num pairs of random-walk pose sequences (N, 178, 3) float32 with lengths in [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (num, 2), generator=g)

    def walk(n):
        return (0.05 * torch.randn(n, evaluate.NUM_JOINTS, 3, generator=g)).cumsum(0)

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
    p.add_argument("--repeats", type=int, default=9, help="dtw_mje runs; fastest and median are reported")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    preds, refs = random_pairs(args.pairs, args.min_len, args.max_len, args.seed)
    print(f"{args.pairs} random pairs, lengths {args.min_len}-{args.max_len}, "
          f"{evaluate.NUM_JOINTS}x3 joints; torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    runs = sorted((timed(evaluate.dtw_mje, preds, refs) for _ in range(args.repeats)),
                  key=lambda r: r[1])
    mje, wall, cpu = runs[0]
    median = runs[len(runs) // 2][1]
    rows = [(f"evaluate.dtw_mje (exact; fastest of {args.repeats})", args.pairs, wall, cpu)]

    k = min(args.naive_pairs, args.pairs)
    naive, n_wall, n_cpu = timed(lambda: [naive_dtw(x, y) for x, y in zip(preds[:k], refs[:k])])
    rows.append(("naive pure-Python O(nm) DP", k, n_wall, n_cpu))
    costs, paths = evaluate.dtw_align(preds[:k], refs[:k])
    ref_costs = np.array([c for c, _ in naive])
    rel = np.abs(costs - ref_costs).max() / ref_costs.max()
    same = sum(np.array_equal(a, b) for a, b in zip(paths, [pth for _, pth in naive]))

    refs_ms = {"quoted 35 ms/pair": QUOTED_FASTDTW_MS}
    fast = None
    try:
        from fastdtw import fastdtw
        from scipy.spatial.distance import euclidean
    except ImportError:
        fastdtw = None
    if fastdtw is not None:
        k2 = min(args.fastdtw_pairs, args.pairs)
        xs = [x.reshape(len(x), -1).double().numpy() for x in preds[:k2]]
        ys = [y.reshape(len(y), -1).double().numpy() for y in refs[:k2]]
        for name, dist in (("challenge's DTW-MJE: fastdtw r=1, per-cell torch distance",
                            challenge_distance),
                           ("fastdtw r=1 with scipy's euclidean", euclidean)):
            out, f_wall, f_cpu = timed(lambda: [fastdtw_mje(fastdtw, dist, x, y)
                                                for x, y in zip(xs, ys)])
            rows.append((name, k2, f_wall, f_cpu))
            fast = out if fast is None else fast
        refs_ms["challenge measured here"] = 1000 * rows[2][2] / k2

    print(f"\n| method | pairs timed | total for {args.pairs} pairs | ms/pair (wall) | ms/pair (CPU) | "
          + " | ".join(f"speed-up vs {k}" for k in refs_ms) + " |")
    print("| --- |" + " ---: |" * (4 + len(refs_ms)))
    rows.append(("challenge's DTW-MJE (quoted figure, not run)", 0, QUOTED_FASTDTW_MS / 1000, None))
    for name, num, w, c in rows:
        ms = 1000 * w / max(num, 1)
        total = (f"{w:.3f} s" if num == args.pairs else f"{ms * args.pairs / 1000:.1f} s "
                 + ("(extrap.)" if num else "(quoted)"))
        cpu = f"{1000 * c / num:.3f}" if c is not None else "-"
        print(f"| {name} | {num or '-'} | {total} | {ms:.3f} | {cpu} | "
              + " | ".join(f"{r / ms:.1f}x" for r in refs_ms.values()) + " |")
    median_ms = 1000 * median / args.pairs
    print(f"\nevaluate.dtw_mje over {args.repeats} runs: fastest {wall:.3f} s, median {median:.3f} s "
          f"({median_ms:.3f} ms/pair; at the median "
          + ", ".join(f"{r / median_ms:.1f}x vs {k}" for k, r in refs_ms.items()) + ")")
    print(f"DTW-MJE of the random pairs: {mje:.6f}")
    print(f"exactness vs naive DP on {k} pairs: max relative DTW-cost difference {rel:.2e}, "
          f"identical warping paths {same}/{k}")
    if fast is not None:
        exact = evaluate.dtw_align(preds[:len(fast)], refs[:len(fast)])[0]
        ratio = np.array([c for c, _ in fast]) / exact
        print(f"fastdtw cost / exact cost on {len(fast)} pairs: min {ratio.min():.4f}, "
              f"mean {ratio.mean():.4f} (exact DTW is never costlier)")


if __name__ == "__main__":
    main()
