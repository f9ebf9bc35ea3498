"""Inference with a trained A²V-SLP generator (§3.2, "at inference time ...").

text → BERT token states → predicted length → latent distributions (μ̂, log σ̂²) → z = μ̂ + σ̂ ⊙ ε
→ frozen VAE decoder → poses (N, 178, 3). A generator checkpoint carries everything this needs
(generator weights and configuration, the VAE decoder, the reference pose, the text encoder's name).

    python sample.py --generator runs/demo/gen2/best.pt --data-dir runs/demo/data --split test \
        --out runs/demo/test_predictions.pt            # the challenge's submission format
    python sample.py --generator runs/demo/gen2/best.pt --text "am montag regen im norden" --out one.pt

    python sample.py ... --samples 4 --out s.pt      # 4 sampled realisations per sentence, plus the mean
    python sample.py ... --format pose --out preds/  # one NAME.pose per sentence (pose-format, posefile.py)

The output file is `{name: Tensor[N, 178, 3]}` (the challenge's submission format), readable by
evaluate.py; with --samples K it is `{name: {"poses_3d": mean (N, 178, 3), "samples": (K, N, 178, 3)}}`
(evaluate.py scores the mean), with --format pose the folder holds NAME.pose (the mean with --samples,
else what --mean says) and NAME.sample01.pose ... NAME.sampleK.pose.
"""
import argparse
import os
import sys

import torch

import data
import harness
import posefile
from generator import A2VSLP
from harness import DataError, atomic_save
from vae import load_vae, split_articulators


def load_generator(path, device="cpu"):
    """(A2VSLP, DisentangledVAE, checkpoint dict) rebuilt from a `--stage generator` checkpoint."""
    def build(ckpt):
        model = A2VSLP(**ckpt["model_args"])
        model.load_state_dict(ckpt["model"])
        return model.eval().to(device), load_vae(ckpt, map_location=device), ckpt

    return harness.load_for("", path, "generator", build)


def embed(model, texts, bert, cache_dir=None):
    """{text: (L, E)} token states of the texts, checked: none empty, the generator's width."""
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise DataError(f"text #{i} is empty: nothing to sign")
        data.check_utf8(t, f"text #{i}")
    emb = data.text_embeddings(texts, bert, cache_dir)
    if next(iter(emb.values())).shape[-1] != model.text_dim:
        raise DataError(f"text encoder {bert!r} gives width {next(iter(emb.values())).shape[-1]}, "
                        f"the generator expects {model.text_dim}")
    return emb


def batches(model, texts, bert, batch_size, cache_dir, device):
    """The texts in order, `batch_size` at a time, as the generator reads them: (text_emb (b, L, E),
    text_mask (b, L), layout or None) on `device`."""
    emb = embed(model, texts, bert, cache_dir)
    layouts = data.text_layout(texts, bert) if model.aligned_queries else None
    for i in range(0, len(texts), batch_size):
        text_emb, text_mask = data.pad_stack([emb[t] for t in texts[i:i + batch_size]])   # (b, L, E), (b, L)
        layout = None if layouts is None else tuple(
            data.pad_stack([layouts[t][k] for t in texts[i:i + batch_size]])[0].to(device) for k in (0, 1))
        yield text_emb.to(device), text_mask.to(device), layout


@torch.no_grad()
def generate_poses(model, vae, texts, bert, sample=True, seed=0, batch_size=32, cache_dir=None, device="cpu"):
    """Poses for a list of texts, in order: a list of float32 (N_i, 178, 3) CPU tensors.

    Batched: one decoder pass per batch. ε comes from one torch.Generator seeded with `seed`, so the
    same call gives the same poses; sample=False decodes the means (z = μ̂).
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for text_emb, text_mask, layout in batches(model, texts, bert, batch_size, cache_dir, device):
        poses = model.generate(text_emb, text_mask, vae.decode, sample=sample, rng=gen, layout=layout)
        out += [p.float().cpu() for p in poses]
    return out


@torch.no_grad()
def generate_samples(model, vae, texts, bert, k, seed=0, batch_size=32, cache_dir=None, device="cpu"):
    """K sampled realisations z = μ̂ + σ̂ ⊙ ε of each sentence and its mean (z = μ̂): a list of
    (mean (N_i, 178, 3), samples (K, N_i, 178, 3)) CPU tensors. A sentence's length is predicted once,
    so all its realisations have the same N_i; ε comes from one torch.Generator seeded with `seed`."""
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for text_emb, text_mask, layout in batches(model, texts, bert, batch_size, cache_dir, device):
        means = model.generate(text_emb, text_mask, vae.decode, sample=False, layout=layout)
        lengths = [len(m) for m in means]
        draws = [model.generate(text_emb, text_mask, vae.decode, sample=True, rng=gen, lengths=lengths, layout=layout)
                 for _ in range(k)]
        out += [(m.float().cpu(), torch.stack([d[j] for d in draws]).float().cpu())       # (K, N, 178, 3)
                for j, m in enumerate(means)]
    return out


def _decode_one(model, text, bert, cache_dir, device, return_attention=False):
    """One sentence through the generator at its predicted length: decode's (μ̂, log σ̂²[, attention])."""
    emb = data.text_embeddings([text], bert, cache_dir)[text]                           # (L, E)
    text_emb, text_mask = emb[None].to(device), torch.ones(1, len(emb), dtype=torch.bool, device=device)
    memory = model.encode_text(text_emb, text_mask)                                    # (1, L, D)
    n = int(model.predict_lengths(model.length_ratio(memory, text_mask)))
    frame_mask = torch.ones(1, n, dtype=torch.bool, device=device)
    layout = tuple(x[None].to(device) for x in data.text_layout([text], bert)[text]) if model.aligned_queries else None
    positions, _ = model.align(memory, text_mask, layout, frame_mask)
    return model.decode(memory, text_mask, frame_mask, positions, return_attention=return_attention)


@torch.no_grad()
def predicted_sigma(model, text, bert, cache_dir=None, device="cpu"):
    """{articulator: (N,)} the predicted σ̂ = exp(½ log σ̂²) of one sentence, per frame, averaged over
    each articulator's latent dimensions (body 8, right hand 28, left hand 28, face 16): where the
    model is unsure of its sampling (the spread of z = μ̂ + σ̂ ⊙ ε)."""
    logvar_hat = _decode_one(model, text, bert, cache_dir, device)[1][0]               # (N, 80)
    return {a: torch.exp(0.5 * lv).mean(-1).cpu() for a, lv in split_articulators(logvar_hat).items()}


@torch.no_grad()
def cross_attention(model, text, bert, cache_dir=None, device="cpu"):
    """(attention (N, L), tokens): the decoder's cross-attention for one sentence at its predicted
    length N, averaged over heads and layers, and the L text tokens it attends to."""
    attention = _decode_one(model, text, bert, cache_dir, device, return_attention=True)[2].mean(0)[0]  # (N, L)
    tokenizer = data.load_text_encoder(bert, with_model=False)[0]              # the tokens only
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text, truncation=True, max_length=data.MAX_TOKENS)["input_ids"])
    return attention.cpu(), tokens


def generate_split(generator_path, samples, sample=True, seed=0, batch_size=32, cache_dir=None, device="cpu"):
    """{name: (N, 178, 3)} for release-format samples, the challenge's submission format."""
    model, vae, ckpt = load_generator(generator_path, device)
    poses = generate_poses(model, vae, [s["text"] for s in samples], ckpt["bert"], sample, seed,
                           batch_size, cache_dir, device)
    return {s["name"]: p for s, p in zip(samples, poses)}


def check_device(parser, device):
    """argparse error for a device this machine does not have."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        parser.error(f"--device {device}: not a device name (cpu, cuda, cuda:1)")
    if kind == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {device}: CUDA is not available on this machine; use --device cpu")


def check_out(parser, out, inputs):
    """argparse error when the output file is a folder or would replace one of the inputs
    {flag: path or list of paths}."""
    if os.path.isdir(out):
        parser.error(f"--out {out} is a folder; give a file name")
    for flag, paths in inputs.items():
        for path in [paths] if isinstance(paths, str) else paths or []:
            if os.path.exists(out) and os.path.exists(path) and os.path.samefile(out, path):
                parser.error(f"--out {out} is the {flag} input file {path}; it would be overwritten")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", required=True, help="generator checkpoint (train.py --stage generator)")
    p.add_argument("--data-dir", help="release folder; with --split, generate for every sample of the split")
    p.add_argument("--split", default="test", help="split file name in --data-dir (train, dev, test)")
    p.add_argument("--text", action="append", help="a sentence to sign (repeatable); instead of --data-dir")
    p.add_argument("--out", required=True, help="output .pt file {name: Tensor[N, 178, 3]}, or with "
                   "--format pose a folder for NAME.pose files")
    p.add_argument("--format", choices=["pt", "pose"], default="pt",
                   help="pt: one file in the submission format; pose: one .pose file per sentence "
                        "(pose-format, MediaPipe Holistic components; needs `pip install pose-format`)")
    p.add_argument("--mean", action="store_true", help="decode the predicted means instead of sampling")
    p.add_argument("--samples", type=int, default=0,
                   help="K > 0: K sampled realisations z = mu + sigma * eps per sentence plus the mean (z = mu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise ε")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per decoder pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--cache-dir", default=None,
                   help="text-embedding cache (default: with --data-dir, a folder 'cache' beside --out; "
                        "with --text, none)")
    args = p.parse_args(argv)
    if (args.text is None) == (args.data_dir is None):
        p.error("give either --data-dir (with --split) or --text")
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.samples < 0 or (args.samples and args.mean):
        p.error(f"--samples {args.samples}: give K >= 1 (the mean comes with the samples), without --mean")
    check_device(p, args.device)
    split_path = os.path.join(args.data_dir, f"{args.split}.pt") if args.data_dir else None
    if args.format == "pose":
        if os.path.isfile(args.out):
            p.error(f"--out {args.out} is a file; --format pose writes a folder of .pose files")
        try:
            posefile.pose_format()
        except DataError as e:
            p.error(f"--format pose: {e}")
    else:
        check_out(p, args.out, {"--generator": args.generator, "--data-dir": split_path})
    try:
        for i, t in enumerate(args.text or []):
            if not t.strip():
                raise DataError(f"--text #{i + 1} is empty: nothing to sign")
            data.check_utf8(t, f"--text #{i + 1}")
        if args.text is not None:
            names, texts, cache_dir = [f"text_{i:03d}" for i in range(len(args.text))], args.text, args.cache_dir
        else:
            samples = data.load_split(split_path)
            names, texts = [s["name"] for s in samples], [s["text"] for s in samples]
            cache_dir = args.cache_dir or os.path.join(os.path.dirname(os.path.abspath(args.out)), "cache")
        model, vae, ckpt = load_generator(args.generator, args.device)
        if args.samples:
            made = generate_samples(model, vae, texts, ckpt["bert"], args.samples, args.seed, args.batch_size,
                                    cache_dir, args.device)
            result = {n: {"poses_3d": mean, "samples": draws} for n, (mean, draws) in zip(names, made)}
        else:
            result = dict(zip(names, generate_poses(model, vae, texts, ckpt["bert"], not args.mean, args.seed,
                                                    args.batch_size, cache_dir, device=args.device)))
        if args.format == "pose":
            files = posefile.write_pose_folder(
                {stem: pose for n, r in result.items()
                 for stem, pose in zip(posefile.sample_stems(n, args.samples),
                                       [r["poses_3d"], *r["samples"]] if args.samples else [r])}, args.out)
            print(f"wrote {len(files)} .pose file(s) to {args.out}")
            return
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_save(result, args.out)
        frames = [len(v["poses_3d"] if args.samples else v) for v in result.values()]
        print(f"wrote {len(result)} sequence(s) to {args.out} ({sum(frames)} frames, "
              f"{min(frames)}-{max(frames)} per sequence" + (f", {args.samples} samples each)" if args.samples else ")"))
    except (DataError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
