"""Table 7 of A²V-SLP (§4.2): generate with each generator (or read a submission), back-translate
the poses to text, score them with metrics.py, print the table and write results.json.

Both sides are subsampled to 12.5 fps first (--fps-step 2, the challenge's protocol), so DTW-MJE,
TotDist and Dur all see the same sequences.

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
from collections import Counter

import numpy as np
import torch

import harness
import posefile
import render
import sample
from backtranslation import SignToText
from data import load_split, pad_stack
from generator import GeneratorConfig
from harness import DataError, atomic_json, atomic_save, safe_load
from metrics import ARROWS, COLUMNS, bleu, bleu_signature, chrf, chrf_signature, sampling_report, score
from vae import VAEConfig, load_vae


def print_sampling(reports):
    print(f"| {'Model':32s} | K  | DTW↓ mean (z = μ̂) | DTW↓ samples (± std) | spread | body   | R hand | L hand | face   |")
    print("|" + "-" * 34 + "|----|-------------------|----------------------|" + "--------|" * 5)
    for r in reports:
        sp = r["spread"]
        print(f"| {r['name']:32s} | {r['K']:<2d} | {r['DTW_mean']:17.4f} | "
              f"{r['DTW_samples_mean']:.4f} ± {r['DTW_samples_std']:.4f}    | {sp['all']:.4f} | {sp['body']:.4f} | "
              f"{sp['right_hand']:.4f} | {sp['left_hand']:.4f} | {sp['face']:.4f} |")


# ---------------------------------------------------------------------------------------------
# Command line: generate with each generator (or read submissions), back-translate, score (Table 7)
# ---------------------------------------------------------------------------------------------

def load_backtranslator(path, device="cpu"):
    """SignToText rebuilt from a `train.py --stage backtranslation` checkpoint, and its frame step."""
    def build(ckpt):
        model = SignToText.from_config(ckpt["model_args"])
        model.load_state_dict(ckpt["model"])
        return model.eval().to(device), ckpt.get("subsample", 2)

    return harness.load_for("--backtranslator", path, "backtranslation", build)


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
