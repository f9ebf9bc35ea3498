"""The paper's ablations (Tables 1-6, §4.4) as one command: train every variant, score it, tabulate.

    python ablate.py                                  # all six tables, 3 seeds, built-in corpus
    python ablate.py --tables 2 3 --seeds 3 --data-dir D --out-dir runs/ablate
    python ablate.py --tables 2 --seeds 1 --quick     # a tiny model for a few epochs (minutes)
    python ablate.py --jobs 2                         # two trainings at a time (CPU: cores split)

Every variant is one of the paper's rows reached only through train.py's flags (VARIANTS). Shared
stages are trained once and reused: the back-translator that scores everything, and one VAE per
latent layout (disentangled for all tables, entangled for Table 1), both with seed 0. Each
generator variant is trained with seeds 0..S-1 and scored on the dev split, as the paper's tables
are, by evaluate.py (generated poses sampled, the Table 7 protocol). Table 6 continues the best
Table 5 setting with phase 2, once with the KL term (Eq. 4) and once without, for the same epochs.

An interrupted run continues where it stopped: a finished job leaves OUT/jobs/KEY.done and is not
run again; an unfinished training resumes from its last.pt (train.py's --resume auto).
The results go to OUT/ablations.md and OUT/ablations.json: per table the GT and VAE rows and each
variant's DTW, BLEU-1..4, chrF, ROUGE, WER, Total Distance and Average Duration (evaluate.py's
columns) as mean ± std over seeds, the paper's numbers beside them (it gives no WER, TotDist, Dur),
and a line per claim of the paper saying whether its ordering held here (BLEU-4, in pooled
standard deviations of the seeds). Logs of every job: OUT/logs/KEY.log.
"""
import argparse
import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
import time

METRICS = ("DTW", "B1", "B2", "B3", "B4", "chrF", "ROUGE", "WER", "TotDist", "Dur")   # metrics.COLUMNS
ARROWS = {"DTW": "↓", "WER": "↓", "TotDist": "→1", "Dur": "→1"}   # metrics.ARROWS; the others: ↑
PAPER_METRICS = ("B1", "B2", "B3", "B4", "chrF", "ROUGE")          # the columns of the paper's tables
# Variants are GeneratorConfig field values (generator.py); flags() turns them into train.py's flags
# by the configs' naming rule, so this script needs the standard library only (harness.to_flags does
# the same from the dataclass, and the tests check that both agree).
FIXED = dict(hand_weights="fixed", fixed_weights=(14.0, 10.0, 2.0))   # §4.4.2: all attention ablations
LOCAL = dict(fusion="local", window=3, query="none")


def dynamic(rh, lh, s_max):
    return dict(LOCAL, hand_weights="dynamic", hand_base=(rh, lh), s_max=s_max)


def flags(fields):
    """train.py's flags for GeneratorConfig fields: {"window": 5} -> ["--window", "5"]."""
    out = []
    for name, v in fields.items():
        flag = "--" + name.replace("_", "-")
        out += [flag if v else "--no-" + flag[2:]] if isinstance(v, bool) else \
            [flag, *map(str, v if isinstance(v, tuple) else (v,))]
    return out


# Phase-1 generator variants: (VAE layout, GeneratorConfig fields). Rows shared by several tables
# (the disentangled global-attention model of Tables 1 and 2, the N = 3 local model of Tables 2-4)
# are trained once.
VARIANTS = {
    "entangled-global": ("entangled", dict(FIXED, fusion="global")),
    "global": ("base", dict(FIXED, fusion="global")),
    **{f"local-N{n}": ("base", dict(FIXED, **LOCAL) | dict(window=n)) for n in (3, 5, 7, 9, 11)},
    "attention-q3": ("base", dict(FIXED, **LOCAL) | dict(query="attention", query_span=3)),
    "mean-q3": ("base", dict(FIXED, **LOCAL) | dict(query="mean", query_span=3)),
    "mean-q5": ("base", dict(FIXED, **LOCAL) | dict(query="mean", query_span=5)),
    "local+global": ("base", dict(FIXED, **LOCAL) | dict(fusion="local+global")),
    "dyn-1.4-1.0-x10": ("base", dynamic(1.4, 1.0, 10)),
    "dyn-3.5-2.5-x4": ("base", dynamic(3.5, 2.5, 4)),
    "dyn-3.5-2.5-x6": ("base", dynamic(3.5, 2.5, 6)),
    "dyn-3.5-2.5-x8": ("base", dynamic(3.5, 2.5, 8)),
    "dyn-3.5-2.5-x10": ("base", dynamic(3.5, 2.5, 10)),
    "dyn-4.0-2.0-x4": ("base", dynamic(4.0, 2.0, 4)),
    "dyn-3.0-3.0-x4": ("base", dynamic(3.0, 3.0, 4)),
    "dyn-2.5-3.5-x4": ("base", dynamic(2.5, 3.5, 4)),
}
# Phase-2 variants (Table 6): (phase-1 variant they continue, more fields).
PHASE2 = {"phase2-no-kl": ("dyn-3.5-2.5-x4", dict(kl_weight=0.0)),
          "phase2-kl": ("dyn-3.5-2.5-x4", {})}

# The paper's dev-set numbers (PAPER_METRICS; None where a table leaves a column out).
GT_DEV = (30.92, 21.34, 16.01, 12.74, 34.71, 30.19)
N3 = (30.09, 20.12, 14.76, 11.59, 33.42, 29.15)
TABLES = {
    1: ("Effect of disentanglement in the latent space", [
        ("Entangled (no split)", "entangled-global", (23.23, 14.31, 9.85, 7.38, 28.70, 21.18)),
        ("Disentangled (H-B-F)", "global", (23.95, 15.01, 10.57, 8.05, 29.28, 22.17))]),
    2: ("Gloss attention in place of the decoder's self-attention", [
        ("w/ Global Self-Attention", "global", (23.95, 15.01, 10.57, 8.05, 29.28, 22.17)),
        ("w/ Gloss Attention (N=3)", "local-N3", N3)]),
    3: ("Locality window size N (query: none)", [
        ("N=3", "local-N3", N3),
        ("N=5", "local-N5", (28.52, 18.85, 13.60, 10.54, 32.54, 27.68)),
        ("N=7", "local-N7", (28.80, 19.65, 14.59, 11.48, 33.47, 28.54)),
        ("N=9", "local-N9", (28.01, 18.29, 13.11, 10.12, 32.21, 26.81)),
        ("N=11", "local-N11", (28.32, 18.85, 13.61, 10.55, 32.70, 27.28))]),
    4: ("Query construction and local-global fusion (N=3)", [
        ("Local gloss (none, N=3)", "local-N3", N3),
        ("Attention query (q=3, N=3)", "attention-q3", (28.63, 18.92, 13.77, 10.81, 32.53, 27.70)),
        ("Mean query (q=3, N=3)", "mean-q3", (29.41, 19.74, 14.49, 11.38, 33.34, 28.33)),
        ("Mean query (q=5, N=3)", "mean-q5", (28.45, 18.98, 13.81, 10.82, 33.06, 27.71)),
        ("Weighted local+global (none, N=3)", "local+global", (27.12, 17.74, 12.92, 10.16, 31.48, 25.61))]),
    5: ("Dynamic hand weights (Eq. 7-8): base (RH, LH) x s_max", [   # the paper gives B1, B4, chrF, ROUGE
        ("(1.4, 1.0) x 10", "dyn-1.4-1.0-x10", (29.91, None, None, 11.90, 33.66, 28.67)),
        ("(3.5, 2.5) x 4", "dyn-3.5-2.5-x4", (29.96, None, None, 12.23, 33.78, 29.12)),
        ("(3.5, 2.5) x 6", "dyn-3.5-2.5-x6", (28.85, None, None, 11.01, 32.92, 27.81)),
        ("(3.5, 2.5) x 8", "dyn-3.5-2.5-x8", (29.53, None, None, 11.68, 33.59, 28.60)),
        ("(3.5, 2.5) x 10", "dyn-3.5-2.5-x10", (29.91, None, None, 12.14, 33.71, 28.91)),
        ("(4.0, 2.0) x 4", "dyn-4.0-2.0-x4", (29.68, None, None, 12.09, 33.98, 28.96)),
        ("(3.0, 3.0) x 4", "dyn-3.0-3.0-x4", (27.86, None, None, 10.43, 32.22, 26.87)),
        ("(2.5, 3.5) x 4", "dyn-2.5-3.5-x4", (27.91, None, None, 10.13, 32.69, 27.09))]),
    6: ("Effect of the KL term (phase 2, Eq. 4)", [
        ("A2V-SLP (phase 2 without KL)", "phase2-no-kl", (29.96, 20.59, 15.43, 12.23, 33.78, 29.12)),
        ("A2V-SLP + KL", "phase2-kl", (31.23, 21.80, 16.54, 13.28, 35.10, 30.71))]),
}
# The paper's claims as orderings on BLEU-4: (table, text, variant, rivals it should beat or tie).
CLAIMS = [
    (1, "disentangled > entangled latents", "global", ["entangled-global"]),
    (2, "gloss attention (N=3) > global self-attention", "local-N3", ["global"]),
    (3, "N=3 best among N = 3..11", "local-N3", ["local-N5", "local-N7", "local-N9", "local-N11"]),
    (4, "frame-wise queries >= attention query", "local-N3", ["attention-q3"]),
    (4, "frame-wise queries >= mean queries (q = 3, 5)", "local-N3", ["mean-q3", "mean-q5"]),
    (4, "local only >= local + global", "local-N3", ["local+global"]),
    (5, "(3.5, 2.5) x 4 best among the Table 5 settings", "dyn-3.5-2.5-x4",
     [v for _, v, _ in TABLES[5][1] if v != "dyn-3.5-2.5-x4"]),
    (5, "(3.5, 2.5) x 4 > low-mass (1.4, 1.0) x 10 (same ceiling)", "dyn-3.5-2.5-x4", ["dyn-1.4-1.0-x10"]),
    (5, "dynamic (3.5, 2.5) x 4 > fixed (14, 10) (the N=3 model of Tables 2-4)", "dyn-3.5-2.5-x4", ["local-N3"]),
    (6, "+ KL >= without KL", "phase2-kl", ["phase2-no-kl"]),
]

# Settings: "full" is the demo's model size (demo.sh), "quick" a tiny model for the test.
SETTINGS = {
    "full": dict(corpus=[], bt=["--epochs", "25", "--batch-size", "32", "--lr", "1e-3"],
                 vae=["--epochs", "30", "--batch-size", "32", "--lr", "2e-3", "--lr-decay", "cosine"],
                 gen=["--d-model", "128", "--ff", "256", "--enc-layers", "2", "--dec-layers", "2",
                      "--enc-heads", "4", "--dec-heads", "4", "--batch-size", "32"],
                 gen_epochs=10, gen_lr=2e-3, phase2_epochs=3, phase2_lr=2e-4),
    "quick": dict(corpus=["--num-train", "48", "--num-dev", "12", "--num-test", "4", "--signers", "6"],
                  bt=["--epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--bt-d-model", "32",
                      "--bt-layers", "1", "--bt-heads", "2", "--bt-ff", "64"],
                  vae=["--epochs", "2", "--batch-size", "16", "--lr", "2e-3"],
                  gen=["--d-model", "32", "--ff", "64", "--enc-layers", "1", "--dec-layers", "1",
                       "--enc-heads", "2", "--dec-heads", "2", "--batch-size", "16"],
                  gen_epochs=2, gen_lr=2e-3, phase2_epochs=1, phase2_lr=2e-4),
}


def default_python():
    """This interpreter if it has torch, else the project's .venv (made by `make test` / `make demo`):
    ablate.py itself needs only the standard library, its jobs need the requirements."""
    venv = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".venv", "bin", "python")
    if importlib.util.find_spec("torch") is None and os.path.exists(venv):
        return venv
    return sys.executable


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=int, nargs="+", default=sorted(TABLES), choices=sorted(TABLES),
                   help="which of the paper's Tables 1-6 to run")
    p.add_argument("--seeds", type=int, default=3, help="generator seeds 0..S-1 per variant")
    p.add_argument("--data-dir", help="release folder (train.pt, dev.pt); default: the built-in corpus, "
                   "written to OUT_DIR/data")
    p.add_argument("--out-dir", default=os.path.join("runs", "ablate"))
    p.add_argument("--quick", action="store_true", help="tiny model, few epochs (the test's setting)")
    p.add_argument("--jobs", type=int, default=1, help="trainings run at a time; on CPU each gets "
                   "nproc / jobs threads")
    p.add_argument("--epochs", type=int, help="generator phase-1 epochs (default: full 10, quick 2)")
    p.add_argument("--phase2-epochs", type=int, help="Table 6 phase-2 epochs (default: full 3, quick 1)")
    p.add_argument("--lr", type=float, help="generator phase-1 learning rate (default 2e-3)")
    p.add_argument("--train-args", default="", help="extra train.py flags for every stage, e.g. "
                   "'--bert PATH' (quoted, one string)")
    p.add_argument("--python", default=default_python(), help="interpreter for train.py and evaluate.py "
                   "(default: this one if it has torch, else .venv/bin/python)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.data_dir and not all(os.path.exists(os.path.join(args.data_dir, f"{s}.pt")) for s in ("train", "dev")):
        p.error(f"--data-dir {args.data_dir}: needs train.pt and dev.pt in the release format")
    return args


class Job:
    def __init__(self, key, cmd, deps=()):
        self.key, self.cmd, self.deps = key, cmd, list(deps)
        self.proc = self.start = self.log = self.logpath = None       # set when it runs


def plan(args):
    """The jobs the chosen tables need, in dependency order: {key: Job}."""
    s = SETTINGS["quick" if args.quick else "full"]
    py, out = args.python, args.out_dir
    data = args.data_dir or os.path.join(out, "data")
    cache = os.path.join(out, "cache")
    extra = shlex.split(args.train_args)
    train = [py, "train.py", "--data-dir", data, "--cache-dir", cache]
    gen_epochs = args.epochs or s["gen_epochs"]
    p2_epochs = args.phase2_epochs or s["phase2_epochs"]
    lr = args.lr or s["gen_lr"]
    run = lambda key: os.path.join(out, "runs", key)
    jobs = {}

    def add(key, cmd, deps=()):
        jobs[key] = Job(key, cmd + extra if cmd[1] == "train.py" else cmd, deps)   # the user's flags win

    first = []
    if not args.data_dir:
        add("corpus", [py, "-m", "corpus", "--out-dir", data, "--seed", "0"] + s["corpus"])
        first = ["corpus"]
    add("backtranslation", train + ["--stage", "backtranslation", "--out-dir", run("backtranslation"), "--seed", "0"]
        + s["bt"], first)
    variants = {v for t in args.tables for _, v, _ in TABLES[t][1]}
    phase1 = {v for v in variants if v in VARIANTS} | {PHASE2[v][0] for v in variants if v in PHASE2}
    for layout in sorted({VARIANTS[v][0] for v in phase1}):
        add(f"vae-{layout}", train + ["--stage", "vae", "--vae-variant", layout, "--out-dir", run(f"vae-{layout}"),
                                      "--seed", "0"] + s["vae"], first)
    def add_generator(key, seed, layout, epochs, lr, flags, deps):
        add(key, train + ["--stage", "generator", "--vae", os.path.join(run(f"vae-{layout}"), "best.pt"),
                          "--out-dir", run(key), "--seed", str(seed), "--epochs", str(epochs), "--lr", str(lr)]
            + s["gen"] + flags, deps)

    for seed in range(args.seeds):
        for v in sorted(phase1):
            layout, fields = VARIANTS[v]
            add_generator(f"{v}-s{seed}", seed, layout, gen_epochs, lr, ["--phase", "1"] + flags(fields),
                          [f"vae-{layout}"])
        for v in sorted(variants & set(PHASE2)):
            base, more = PHASE2[v]
            layout, fields = VARIANTS[base]
            init = os.path.join(run(f"{base}-s{seed}"), "best.pt")
            add_generator(f"{v}-s{seed}", seed, layout, p2_epochs, s["phase2_lr"],
                          ["--phase", "2", "--init", init] + flags(fields | more), [f"{base}-s{seed}"])
        for v in sorted(variants):
            add(f"eval-{v}-s{seed}", [py, "evaluate.py", "--data-dir", data, "--split", "dev", "--generator",
                                      os.path.join(run(f"{v}-s{seed}"), "best.pt"), "--backtranslator",
                                      os.path.join(run("backtranslation"), "best.pt"), "--seed", str(seed),
                                      "--cache-dir", cache, "--out", eval_path(out, v, seed)],
                [f"{v}-s{seed}", "backtranslation"])
    return jobs


def eval_path(out, variant, seed):
    return os.path.join(out, "runs", f"{variant}-s{seed}", "eval", "results.json")


def run_jobs(jobs, args):
    """Run the jobs whose .done marker is missing, at most --jobs at a time, dependencies first."""
    os.makedirs(os.path.join(args.out_dir, "jobs"), exist_ok=True)
    os.makedirs(os.path.join(args.out_dir, "logs"), exist_ok=True)
    marker = lambda key: os.path.join(args.out_dir, "jobs", f"{key}.done")
    done = {k for k in jobs if os.path.exists(marker(k))}
    todo = [k for k in jobs if k not in done]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    print(f"{len(jobs)} jobs, {len(done)} already done, {len(todo)} to run, {args.jobs} at a time "
          f"(OMP_NUM_THREADS={env['OMP_NUM_THREADS']}); logs in {args.out_dir}/logs", flush=True)
    running, failed, total = [], [], len(todo)
    root = os.path.dirname(os.path.abspath(__file__))
    try:
        while todo or running:
            for job in list(running):
                if job.proc.poll() is None:
                    continue
                running.remove(job)
                job.log.close()
                secs = time.time() - job.start
                if job.proc.returncode == 0:
                    with open(marker(job.key), "w") as f:
                        f.write(f"{secs:.1f}\n")
                    done.add(job.key)
                    print(f"[{time.strftime('%H:%M:%S')}] done   {job.key} ({secs:.0f} s; "
                          f"{total - len(todo) - len(running)}/{total})", flush=True)
                else:
                    failed.append(job.key)
                    print(f"[{time.strftime('%H:%M:%S')}] FAILED {job.key} (exit {job.proc.returncode}); "
                          f"log: {job.logpath}", flush=True)
            if failed:
                todo = [k for k in todo if not any(d in failed for d in dependencies(jobs, k))]
            ready = [k for k in todo if all(d in done for d in jobs[k].deps)]
            while ready and len(running) < args.jobs:
                job = jobs[ready.pop(0)]
                todo.remove(job.key)
                job.logpath = os.path.join(args.out_dir, "logs", f"{job.key}.log")
                job.log = open(job.logpath, "a")
                job.log.write(f"$ {shlex.join(job.cmd)}\n")
                job.log.flush()
                job.start = time.time()
                job.proc = subprocess.Popen(job.cmd, cwd=root, env=env, stdout=job.log, stderr=subprocess.STDOUT)
                running.append(job)
                print(f"[{time.strftime('%H:%M:%S')}] start  {job.key}", flush=True)
            if not ready and not running and todo:       # what is left waits on a failed job
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        for job in running:
            job.proc.terminate()
        for job in running:
            job.proc.wait()
        print("interrupted: run the same command again to continue", file=sys.stderr)
        raise SystemExit(130)
    return failed


def dependencies(jobs, key):
    """Every job `key` waits on, directly or not."""
    seen, stack = set(), list(jobs[key].deps)
    while stack:
        d = stack.pop()
        if d not in seen:
            seen.add(d)
            stack.extend(jobs[d].deps if d in jobs else [])
    return seen


def mean_std(values):
    """(mean, sample std) of the values; (None, None) if one is missing (null in results.json, or a
    results.json written before that column existed)."""
    if any(v is None for v in values):
        return None, None
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def collect(args):
    """Read the evaluations: {variant: {"seeds": [rows], "gt": row, "vae": row}}. A variant that is
    a row of several tables (local-N3 of Tables 2-4) is read once."""
    got = {}
    for v in dict.fromkeys(v for t in args.tables for _, v, _ in TABLES[t][1]):
        for seed in range(args.seeds):
            path = eval_path(args.out_dir, v, seed)
            if not os.path.exists(path):
                continue
            with open(path) as f:
                rows = json.load(f)["rows"]
            entry = got.setdefault(v, {"seeds": [], "gt": rows[0]})
            entry["vae"] = next((r for r in rows if r["name"] == "VAE"), None)
            entry["seeds"].append(next(r for r in rows if r["name"] not in ("GT", "VAE")))
    return got


def summarize(args, got, job_seconds):
    """ablations.json content: per table the rows (mean, std, paper) and the claims."""
    tables = {}
    for t in args.tables:
        title, rows = TABLES[t]
        out_rows = []
        any_entry = next((got[v] for _, v, _ in rows if v in got), None)
        if any_entry:
            out_rows.append({"name": "GT (dev)", "mean": {m: any_entry["gt"].get(m) for m in METRICS},
                             "paper": dict(zip(PAPER_METRICS, GT_DEV))})
            vaes = {VARIANTS[v if v in VARIANTS else PHASE2[v][0]][0]: got[v]["vae"] for _, v, _ in rows if v in got}
            for layout, r in sorted(vaes.items()):
                if r is not None:
                    out_rows.append({"name": f"VAE ({layout}) reconstructions", "mean": {m: r.get(m) for m in METRICS}})
        for name, v, paper in rows:
            row = {"name": name, "variant": v, "paper": dict(zip(PAPER_METRICS, paper))}
            if v in got:
                stats = {m: mean_std([r.get(m) for r in got[v]["seeds"]]) for m in METRICS}
                row.update(seeds=len(got[v]["seeds"]), mean={m: s[0] for m, s in stats.items()},
                           std={m: s[1] for m, s in stats.items()})
            out_rows.append(row)
        claims = [judge(text, v, rivals, got) for tt, text, v, rivals in CLAIMS if tt == t]
        tables[str(t)] = {"title": title, "rows": out_rows, "claims": claims}
    return {"settings": {"quick": args.quick, "seeds": args.seeds, "data_dir": args.data_dir or "built-in corpus",
                         "epochs": args.epochs or SETTINGS["quick" if args.quick else "full"]["gen_epochs"],
                         "job_seconds": job_seconds}, "tables": tables}


def judge(text, variant, rivals, got):
    """Did `variant` score at least as high a BLEU-4 as its strongest rival? By how many pooled std?"""
    if variant not in got or not all(r in got for r in rivals):
        return {"claim": text, "held": None, "note": "not run"}
    mine = [r["B4"] for r in got[variant]["seeds"]]
    best = max(rivals, key=lambda r: mean_std([x["B4"] for x in got[r]["seeds"]])[0])
    theirs = [r["B4"] for r in got[best]["seeds"]]
    (m1, s1), (m2, s2) = mean_std(mine), mean_std(theirs)
    delta, pooled = m1 - m2, math.sqrt((s1 ** 2 + s2 ** 2) / 2)
    sigmas = delta / pooled if pooled > 0 else None
    return {"claim": text, "held": delta >= 0, "delta_B4": delta, "sigmas": sigmas, "strongest_rival": best}


def fmt(row, m):
    if "mean" not in row or m not in row["mean"] or row["mean"][m] is None:
        return "–"
    digits = 3 if m == "DTW" else 2
    if "std" in row and row.get("seeds", 1) > 1:
        return f"{row['mean'][m]:.{digits}f} ± {row['std'][m]:.{digits}f}"
    return f"{row['mean'][m]:.{digits}f}"


def markdown(summary):
    st = summary["settings"]
    lines = [f"# A2V-SLP ablations (dev split; mean ± std over {st['seeds']} seed(s); {st['data_dir']}; "
             f"generator {st['epochs']} epochs{', quick setting' if st['quick'] else ''})", ""]
    for t, tab in summary["tables"].items():
        lines += [f"## Table {t}: {tab['title']}", "",
                  "| Model | " + " | ".join(m + ARROWS.get(m, "↑") for m in METRICS) + " | paper B1 / B4 / chrF / ROUGE |",
                  "|---|" + "---|" * len(METRICS) + "---|"]
        for row in tab["rows"]:
            paper = row.get("paper")
            ptxt = " / ".join("–" if paper[m] is None else f"{paper[m]:.2f}" for m in ("B1", "B4", "chrF", "ROUGE")) \
                if paper else ""
            lines.append(f"| {row['name']} | " + " | ".join(fmt(row, m) for m in METRICS) + f" | {ptxt} |")
        lines.append("")
        for c in tab["claims"]:
            if c["held"] is None:
                lines.append(f"- {c['claim']}: not run")
                continue
            sig = "" if c["sigmas"] is None else f", {c['sigmas']:+.1f} pooled std"
            lines.append(f"- {c['claim']}: **{'held' if c['held'] else 'did not hold'}** "
                         f"(BLEU-4 {c['delta_B4']:+.2f} against {c['strongest_rival']}{sig})")
        lines.append("")
    lines.append(f"Total job time {st['job_seconds'] / 60:.1f} min (the sum over jobs; with --jobs J the wall "
                 f"time is about 1/J of it).")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = get_args(argv)
    jobs = plan(args)
    failed = run_jobs(jobs, args)
    job_seconds = 0.0
    for key in jobs:
        path = os.path.join(args.out_dir, "jobs", f"{key}.done")
        if os.path.exists(path):
            with open(path) as f:
                job_seconds += float(f.read().strip() or 0)
    summary = summarize(args, collect(args), job_seconds)
    with open(os.path.join(args.out_dir, "ablations.json"), "w") as f:
        json.dump(summary, f, indent=2)
    text = markdown(summary)
    with open(os.path.join(args.out_dir, "ablations.md"), "w") as f:
        f.write(text)
    print("\n" + text + f"wrote {args.out_dir}/ablations.md and ablations.json")
    if failed:
        print(f"error: {len(failed)} job(s) failed: {', '.join(failed)} (their logs: {args.out_dir}/logs/); "
              "the tables above lack their rows. Fix the cause and run the same command again.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
