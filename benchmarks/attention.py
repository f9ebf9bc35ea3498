"""Gloss attention (§3.2): blocked banded attention vs one dense SDPA call with a T×T band mask.

    .venv/bin/python benchmarks/attention.py               # T = 32 … 8192, N = 3 and 11
    .venv/bin/python benchmarks/attention.py --quick       # T = 32 … 1024, 3 repeats

For B = 8, H = 8, D = 64, float32 on CPU, with padding (sequence b has a random length in
[T/2, T]), each row of the table gives, for gloss_attention.banded_attention (automatic block
size, dense dispatch for short T) and gloss_attention.dense_banded_attention:
- fwd: the median time of a forward call under torch.no_grad;
- fwd+bwd: the median time of a forward call with autograd plus the backward to q, k, v;
- ratio: dense time / banded time (> 1: banded is faster), measured side by side: the two methods
  alternate inside every repeat, in alternating order, and the ratio is the median over repeats
  of each repeat's own dense/banded ratio, so load from other processes cancels out;
- peak MB: the growth of the peak resident set size (VmHWM) during one forward+backward,
  measured in a fresh subprocess per (method, T, N) after the inputs are allocated: outputs,
  gradients, masks and SDPA workspaces, i.e. what the call itself costs in memory;
- max |Δ|: the largest absolute difference between the two methods over the output and the
  gradients of q, k and v.
Below the table: dense runs skipped because their predicted time exceeds --dense-budget (and
why), the goals (banded ≤ 1.1 × dense at every T; at T = 4096 fwd ≥ 10× and fwd+bwd ≥ 8× faster
for N = 3, both ≥ 5× for N = 11) and how banded time and memory grow per doubling of T ≥ 1024.
Short calls get extra repeats (--min-seconds); memory below ~5 MB is at the allocator's noise
floor. --layout bthd stores q, k, v as (B, T, H, D), the layout GlossAttention produces.

One thread by default: on a machine shared with other jobs, a second OpenMP thread that gets
descheduled stalls every parallel region, which inflated short calls 10–100× in our runs and made
rows incomparable; --threads 0 uses torch's default thread count.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gloss_attention import banded_attention, dense_banded_attention  # noqa: E402

METHODS = {"banded": banded_attention, "dense": dense_banded_attention}
FULL_LENGTHS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
QUICK_LENGTHS = (32, 64, 128, 256, 512, 1024)


def make_inputs(batch, heads, length, dim, seed=0, layout="bhtd"):
    """q, k, v (B, H, T, D), a key mask (B, T) with lengths in [T/2, T], an upstream gradient.

    layout "bthd" stores q, k, v as (B, T, H, D) in memory, as a projection split into heads does.
    """
    g = torch.Generator().manual_seed(seed)
    if layout == "bhtd":
        q, k, v = (torch.randn(batch, heads, length, dim, generator=g) for _ in range(3))
    else:
        q, k, v = (torch.randn(batch, length, heads, dim, generator=g).transpose(1, 2) for _ in range(3))
    lengths = torch.randint(max(length // 2, 1), length + 1, (batch,), generator=g)   # (B,)
    lengths[0] = length                                                    # one full sequence
    key_mask = torch.arange(length)[None, :] < lengths[:, None]            # (B, T)
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
    grads = torch.autograd.grad(out, leaves, grad_out)
    return (out.detach(), *grads)


def timed(call):
    t0 = time.perf_counter()
    result = call()
    return time.perf_counter() - t0, result


def measure_times(length, window, args, run_dense):
    """Median fwd and fwd+bwd seconds per method, interleaved; and the max |Δ| between them."""
    inputs = make_inputs(args.batch, args.heads, length, args.dim, layout=args.layout)
    methods = [name for name in METHODS if name == "banded" or run_dense]
    times = {(name, mode): [] for name in methods for mode in ("fwd", "fwd+bwd")}
    results = {}
    t0 = time.perf_counter()
    for name in methods:                                                   # warm-up
        forward(METHODS[name], window, inputs)
        forward_backward(METHODS[name], window, inputs)
    per_repeat = time.perf_counter() - t0
    # Short calls are noisy on a shared machine: repeat them until about --min-seconds (≤ 100×).
    repeats = max(args.repeats, min(100, int(args.min_seconds / max(per_repeat, 1e-6))))
    for r in range(repeats):
        for name in (methods if r % 2 == 0 else methods[::-1]):
            fn = METHODS[name]
            seconds, _ = timed(lambda: forward(fn, window, inputs))
            times[name, "fwd"].append(seconds)
            seconds, results[name] = timed(lambda: forward_backward(fn, window, inputs))
            times[name, "fwd+bwd"].append(seconds)
    medians = {key: statistics.median(values) for key, values in times.items()}
    if run_dense:             # paired: each repeat's dense and banded runs are next to each other
        for mode in ("fwd", "fwd+bwd"):
            medians["ratio", mode] = statistics.median(
                d / b for d, b in zip(times["dense", mode], times["banded", mode]))
    diff = None
    if run_dense:
        diff = max((a - b).abs().max().item() for a, b in zip(results["banded"], results["dense"]))
    return medians, diff


def read_status_kb(field):
    """A memory field of /proc/self/status in kB (VmRSS: resident now, VmHWM: peak resident)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def reset_peak_rss():
    """Reset the peak-RSS mark (VmHWM) to the current RSS; return the current RSS in kB.

    ru_maxrss is not used: after fork+exec Linux carries the parent's peak into the child.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return read_status_kb("VmRSS")
    except OSError:                         # old kernel: fall back to the peak so far
        return max(read_status_kb("VmRSS"), read_status_kb("VmHWM"))


def memory_probe(args):
    """Subprocess mode: print the peak-RSS growth (MB) of one forward+backward call."""
    torch.manual_seed(0)
    fn = METHODS[args.probe_method]
    # Load the kernels and thread pools on a tiny problem so that they are not counted.
    small = make_inputs(1, 1, 128, args.dim)
    forward_backward(banded_attention, args.probe_window, small)
    forward_backward(dense_banded_attention, args.probe_window, small)
    inputs = make_inputs(args.batch, args.heads, args.probe_length, args.dim, layout=args.layout)
    base_kb = reset_peak_rss()
    forward_backward(fn, args.probe_window, inputs)
    peak_kb = read_status_kb("VmHWM")
    print(f"{max(peak_kb - base_kb, 0) / 1024:.1f}")


def measure_memory(method, length, window, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--probe-method", method,
           "--probe-length", str(length), "--probe-window", str(window),
           "--batch", str(args.batch), "--heads", str(args.heads), "--dim", str(args.dim),
           "--threads", str(args.threads), "--layout", args.layout]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return f"error ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode})"
    return proc.stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T = 32 … 1024 and 3 repeats")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per method and mode (median reported); default 5, 3 with --quick")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="override the list of T")
    parser.add_argument("--windows", type=int, nargs="+", default=[3, 11], help="window sizes N")
    parser.add_argument("--batch", type=int, default=8, help="B")
    parser.add_argument("--heads", type=int, default=8, help="H")
    parser.add_argument("--dim", type=int, default=64, help="D per head")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="for short calls, add repeats (up to 100) until a row has taken this long")
    parser.add_argument("--layout", choices=("bhtd", "bthd"), default="bhtd",
                        help="memory layout of q, k, v: contiguous (B, H, T, D), or (B, T, H, D) "
                             "viewed as (B, H, T, D) like GlossAttention's projections")
    parser.add_argument("--dense-budget", type=float, default=300.0,
                        help="skip dense at a T when its predicted time for all runs exceeds this (s)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 by default (see above), 0 for torch's default")
    parser.add_argument("--probe-method", choices=tuple(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--probe-length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe-window", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe_method:
        memory_probe(args)
        return
    args.repeats = args.repeats or (3 if args.quick else 5)
    lengths = args.lengths or (QUICK_LENGTHS if args.quick else FULL_LENGTHS)

    print(f"B={args.batch} H={args.heads} D={args.dim} float32 CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, layout {args.layout}, median of ≥ {args.repeats} "
          f"interleaved repeats; times in ms")
    header = ("| N | T | fwd banded | fwd dense | fwd ratio | fwd+bwd banded | fwd+bwd dense "
              "| fwd+bwd ratio | peak MB banded | peak MB dense | max abs diff |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows, notes = [], []
    for window in args.windows:
        last_dense = None                                                  # (T, fwd s, fwd+bwd s)
        for length in lengths:
            run_dense, reason = True, ""
            if last_dense is not None:
                scale = (length / last_dense[0]) ** 2                      # dense work grows as T²
                predicted = (args.repeats + 1) * scale * (last_dense[1] + last_dense[2])
                if predicted > args.dense_budget:
                    run_dense = False
                    mask_gb = args.batch * length * length * 5 / 1e9       # bool mask + its float copy
                    reason = (f"N={window} T={length}: dense skipped, predicted {predicted:.0f} s for "
                              f"{args.repeats + 1} runs > --dense-budget {args.dense_budget:.0f} s "
                              f"(its B×T×T masks, {mask_gb:.1f} GB, would fit in memory)")
                    notes.append(reason)
            medians, diff = measure_times(length, window, args, run_dense)
            if run_dense:
                last_dense = (length, medians["dense", "fwd"], medians["dense", "fwd+bwd"])
            mem = {"banded": "-", "dense": "-"}
            if not args.no_memory:
                for name in mem:
                    if name == "banded" or run_dense:
                        mem[name] = measure_memory(name, length, window, args)

            def ms(name, mode):
                return f"{1e3 * medians[name, mode]:.2f}" if (name, mode) in medians else "skipped"

            def ratio(mode):
                if ("dense", mode) not in medians:
                    return "skipped"
                return f"{medians['ratio', mode]:.2f}"

            row = (window, length, ms("banded", "fwd"), ms("dense", "fwd"), ratio("fwd"),
                   ms("banded", "fwd+bwd"), ms("dense", "fwd+bwd"), ratio("fwd+bwd"),
                   mem["banded"], mem["dense"] if run_dense else "skipped",
                   f"{diff:.1e}" if diff is not None else "skipped")
            rows.append((window, length, medians, mem["banded"]))
            print("| " + " | ".join(str(c) for c in row) + " |", flush=True)
    for note in notes:
        print(note)
    report_goals(rows)


def report_goals(rows):
    """Check the targets: banded ≤ 1.1 × dense everywhere; speed-ups at T = 4096."""
    worst = None
    for window, length, m, _ in rows:
        for mode in ("fwd", "fwd+bwd"):
            if ("ratio", mode) in m:
                r = 1.0 / m["ratio", mode]
                if worst is None or r > worst[0]:
                    worst = (r, window, length, mode)
    if worst is not None:
        ok = "met" if worst[0] <= 1.1 else "NOT met"
        print(f"goal banded ≤ 1.1 × dense at every T: {ok} (worst banded/dense = {worst[0]:.2f} "
              f"at N={worst[1]} T={worst[2]} {worst[3]})")
    targets = {3: {"fwd": 10.0, "fwd+bwd": 8.0}, 11: {"fwd": 5.0, "fwd+bwd": 5.0}}
    for window, length, m, _ in rows:
        if length != 4096 or window not in targets:
            continue
        for mode, goal in targets[window].items():
            if ("ratio", mode) in m:
                speedup = m["ratio", mode]
                ok = "met" if speedup >= goal else "NOT met"
                print(f"goal T=4096 N={window} {mode}: ≥ {goal:.0f}× faster: {ok} ({speedup:.1f}×)")
    for window in sorted({row[0] for row in rows}):
        long = [row for row in rows if row[0] == window and row[1] >= 1024]
        growth = []
        for key in ("fwd", "fwd+bwd", "memory"):
            steps = []
            for (_, t0, m0, mem0), (_, t1, m1, mem1) in zip(long, long[1:]):
                if t1 != 2 * t0:
                    continue
                if key == "memory":
                    try:
                        steps.append(float(mem1) / float(mem0))
                    except ValueError:
                        pass
                else:
                    steps.append(m1["banded", key] / m0["banded", key])
            if steps:
                growth.append(f"{key} ×{statistics.median(steps):.2f}")
        if growth:
            print(f"banded growth per doubling of T ≥ 1024, N={window} (2.00 = linear): "
                  + ", ".join(growth))


if __name__ == "__main__":
    main()
