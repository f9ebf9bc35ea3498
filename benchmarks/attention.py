"""Gloss attention (§3.2): banded_attention against one SDPA call with the band and key-padding mask.

    .venv/bin/python benchmarks/attention.py               # T = 32 … 4096, N = 3 and 11, both layouts
    .venv/bin/python benchmarks/attention.py --quick       # T = 32 … 1024, 3 repeats

B = 8, H = 8, D = 64, float32 on CPU with torch's default thread count (what a user gets), padding
(sequence b has a random length in [T/2, T]). For each memory layout of q, k, v — "bhtd",
contiguous (B, H, T, D), and "bthd", (B, T, H, D) viewed as (B, H, T, D) as a projection split
into heads gives it — and each (N, T), a row gives:
- ref: one F.scaled_dot_product_attention call with the (T, T) band & key-padding mask, the
  reference a user would write (gloss_attention.dense_banded_attention is this call);
- banded: gloss_attention.banded_attention as called: the dense call up to DENSE_MAX_T, then its
  blocked form;
- blocked: the blocked form forced (block=block_size(N, T)), to show the crossover;
- fwd: median time of a forward call under torch.no_grad; fwd+bwd: forward with autograd plus the
  backward to q, k, v; ratio: banded time / ref time, the median over repeats of each repeat's own
  ratio (the methods alternate inside every repeat, so load from other processes cancels out);
- max |Δ|: banded against ref over the output and the gradients of q, k, v.
ref is skipped where its predicted time exceeds --dense-budget. Below the table:
the goals (banded ≤ 1.15 × ref at T = 128 and never much slower; ≥ 10× faster at T = 4096, N = 3).
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gloss_attention import band_mask, banded_attention, block_size  # noqa: E402

FULL_LENGTHS = (32, 64, 128, 256, 384, 512, 1024, 2048, 4096)
QUICK_LENGTHS = (32, 64, 128, 256, 384, 512, 1024)


def sdpa_reference(q, k, v, window, key_mask):
    """One SDPA call with the band and the key-padding mask."""
    allowed = band_mask(q.shape[2], window)[None, None] & key_mask[:, None, None, :]  # (B, 1, T, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)                  # (B, H, T, D)


def blocked(q, k, v, window, key_mask):
    return banded_attention(q, k, v, window, key_mask, block=block_size(window, q.shape[2]))


METHODS = {"ref": sdpa_reference, "banded": banded_attention, "blocked": blocked}


def make_inputs(batch, heads, length, dim, layout, seed=0):
    """q, k, v (B, H, T, D) stored in `layout`, a key mask (B, T) with lengths in [T/2, T] (one
    full sequence), an upstream gradient."""
    g = torch.Generator().manual_seed(seed)
    if layout == "bhtd":
        q, k, v = (torch.randn(batch, heads, length, dim, generator=g) for _ in range(3))
    else:
        q, k, v = (torch.randn(batch, length, heads, dim, generator=g).transpose(1, 2) for _ in range(3))
    lengths = torch.randint(max(length // 2, 1), length + 1, (batch,), generator=g)   # (B,)
    lengths[0] = length
    key_mask = torch.arange(length)[None, :] < lengths[:, None]                      # (B, T)
    grad_out = torch.randn(batch, heads, length, dim, generator=g)
    return q, k, v, key_mask, grad_out


def forward(fn, window, inputs):
    q, k, v, key_mask, _ = inputs
    with torch.no_grad():
        return fn(q, k, v, window, key_mask)


def forward_backward(fn, window, inputs):
    q, k, v, key_mask, grad_out = inputs
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, window, key_mask)
    return (out.detach(), *torch.autograd.grad(out, leaves, grad_out))


def timed(call):
    t0 = time.perf_counter()
    result = call()
    return time.perf_counter() - t0, result


def measure(inputs, window, methods, args):
    """{(method, mode): median seconds}, {("ratio", mode): median banded/ref} over repeats, and
    the max |Δ| between banded and ref (None without ref)."""
    t0 = time.perf_counter()
    for name in methods:                                                    # warm-up
        forward(METHODS[name], window, inputs)
        forward_backward(METHODS[name], window, inputs)
    per_repeat = time.perf_counter() - t0
    repeats = max(args.repeats, min(100, int(args.min_seconds / max(per_repeat, 1e-6))))
    times = {(name, mode): [] for name in methods for mode in ("fwd", "fwd+bwd")}
    results = {}
    for r in range(repeats):
        for name in (methods if r % 2 == 0 else methods[::-1]):
            fn = METHODS[name]
            times[name, "fwd"].append(timed(lambda: forward(fn, window, inputs))[0])
            seconds, results[name] = timed(lambda: forward_backward(fn, window, inputs))
            times[name, "fwd+bwd"].append(seconds)
    out = {key: statistics.median(values) for key, values in times.items()}
    if "ref" in methods:
        for mode in ("fwd", "fwd+bwd"):
            out["ratio", mode] = statistics.median(
                b / r for b, r in zip(times["banded", mode], times["ref", mode]))
        return out, max((a - b).abs().max().item() for a, b in zip(results["banded"], results["ref"]))
    return out, None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T = 32 … 1024 and 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 5, 3 with --quick)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="override the list of T")
    parser.add_argument("--windows", type=int, nargs="+", default=[3, 11], help="window sizes N")
    parser.add_argument("--layouts", nargs="+", default=["bhtd", "bthd"], choices=("bhtd", "bthd"),
                        help="memory layouts of q, k, v")
    parser.add_argument("--batch", type=int, default=8, help="B")
    parser.add_argument("--heads", type=int, default=8, help="H")
    parser.add_argument("--dim", type=int, default=64, help="D per head")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="for short calls, add repeats (up to 100) until a row has taken this long")
    parser.add_argument("--dense-budget", type=float, default=400.0,
                        help="skip ref at a T where its predicted time for all repeats exceeds this (s)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.repeats = args.repeats or (3 if args.quick else 5)
    lengths = args.lengths or (QUICK_LENGTHS if args.quick else FULL_LENGTHS)

    print(f"B={args.batch} H={args.heads} D={args.dim} float32 CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs; median of ≥ {args.repeats} interleaved repeats; times in ms")
    cols = [f"{mode} {name}" for mode in ("fwd", "fwd+bwd") for name in METHODS]
    print("| layout | N | T | " + " | ".join(cols) + " | fwd banded/ref | fwd+bwd banded/ref | max abs diff |")
    print("|" + "---|" * (len(cols) + 6))
    rows = []
    for layout in args.layouts:
        for window in args.windows:
            last = None                                           # (T, seconds of one ref repeat)
            for length in lengths:
                methods = list(METHODS)
                if last is not None and (args.repeats + 1) * last[1] * (length / last[0]) ** 2 > args.dense_budget:
                    methods.remove("ref")
                inputs = make_inputs(args.batch, args.heads, length, args.dim, layout)
                m, diff = measure(inputs, window, methods, args)
                if "ref" in methods:
                    last = (length, m["ref", "fwd"] + m["ref", "fwd+bwd"])
                diff = "-" if diff is None else f"{diff:.1e}"
                cells = [f"{1e3 * m[name, mode]:.2f}" if (name, mode) in m else "skipped"
                         for mode in ("fwd", "fwd+bwd") for name in METHODS]
                ratios = [f"{m['ratio', mode]:.2f}" if ("ratio", mode) in m else "-" for mode in ("fwd", "fwd+bwd")]
                print(f"| {layout} | {window} | {length} | " + " | ".join(cells + ratios) + f" | {diff} |",
                      flush=True)
                rows.append((layout, window, length, m))
    report_goals(rows)


def report_goals(rows):
    """banded ≤ 1.15 × ref at T = 128 (and the worst ratio anywhere); ≥ 10× faster at T = 4096."""
    measured = [(m["ratio", mode], layout, window, length, mode) for layout, window, length, m in rows
                for mode in ("fwd", "fwd+bwd") if ("ratio", mode) in m]
    at_128 = [r for r in measured if r[3] == 128]
    if at_128:
        worst = max(at_128)
        print(f"goal banded ≤ 1.15 × ref at T = 128: {'met' if worst[0] <= 1.15 else 'NOT met'} "
              f"(worst {worst[0]:.2f} in {worst[1]}, N={worst[2]}, {worst[4]})")
    if measured:
        worst = max(measured)
        print(f"worst banded/ref at any T: {worst[0]:.2f} ({worst[1]}, N={worst[2]}, T={worst[3]}, {worst[4]})")
    for layout, window, length, m in rows:
        if length == 4096 and ("ratio", "fwd") in m:
            for mode in ("fwd", "fwd+bwd"):
                speedup = 1 / m["ratio", mode]
                goal = "met" if speedup >= 10 or window != 3 else "NOT met"
                print(f"T=4096 {layout} N={window} {mode}: banded {speedup:.1f}× faster than ref"
                      + (f" (goal ≥ 10×: {goal})" if window == 3 else ""))


if __name__ == "__main__":
    main()
