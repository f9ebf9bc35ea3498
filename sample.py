"""Inference with a trained A²V-SLP generator (§3.2, "at inference time ...").

text → BERT token states → predicted length → latent distributions (μ̂, log σ̂²) → z = μ̂ + σ̂ ⊙ ε
→ frozen VAE decoder → poses (N, 178, 3). A generator checkpoint carries everything this needs
(generator weights and configuration, the VAE decoder, the reference pose, the text encoder's name).

    python sample.py --generator runs/demo/gen2/best.pt --data-dir runs/demo/data --split test \
        --out runs/demo/test_predictions.pt            # the challenge's submission format
    python sample.py --generator runs/demo/gen2/best.pt --text "am montag regen im norden" --out one.pt

The output file is `{name: Tensor[N, 178, 3]}` (REFERENCE.md §1), readable by evaluate.py.
"""
import argparse
import os
import sys

import torch

import data
from data import DataError, atomic_save, load_checkpoint
from generator import A2VSLP
from vae import load_vae


def load_generator(path, device="cpu"):
    """(A2VSLP, DisentangledVAE, checkpoint dict) rebuilt from a `--stage generator` checkpoint."""
    ckpt = load_checkpoint(path, "generator")
    try:
        model = A2VSLP(**{"query_span" if k == "q" else k: v for k, v in ckpt["model_args"].items()})  # q: older
        model.load_state_dict(ckpt["model"])
        vae = load_vae(ckpt, map_location=device)
    except (KeyError, TypeError, RuntimeError) as e:
        raise DataError(f"{path}: damaged generator checkpoint: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return model.eval().to(device), vae, ckpt


@torch.no_grad()
def generate_poses(model, vae, texts, bert, sample=True, seed=0, batch_size=32, cache_dir=None, device="cpu"):
    """Poses for a list of texts, in order: a list of float32 (N_i, 178, 3) CPU tensors.

    Batched: one decoder pass per batch. ε comes from one torch.Generator seeded with `seed`, so the
    same call gives the same poses; sample=False decodes the means (z = μ̂).
    """
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise DataError(f"text #{i} is empty: nothing to sign")
        data.check_utf8(t, f"text #{i}")
    emb = data.text_embeddings(texts, bert, cache_dir)
    if next(iter(emb.values())).shape[-1] != model.text_dim:
        raise DataError(f"text encoder {bert!r} gives width {next(iter(emb.values())).shape[-1]}, "
                        f"the generator expects {model.text_dim}")
    layouts = data.text_layout(texts, bert) if model.aligned_queries else None
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for i in range(0, len(texts), batch_size):
        text_emb, text_mask = data.pad_stack([emb[t] for t in texts[i:i + batch_size]])   # (b, L, E), (b, L)
        layout = None if layouts is None else tuple(
            data.pad_stack([layouts[t][k] for t in texts[i:i + batch_size]])[0].to(device) for k in (0, 1))
        poses = model.generate(text_emb.to(device), text_mask.to(device), vae.decode, sample=sample, rng=gen,
                               layout=layout)
        out += [p.float().cpu() for p in poses]
    return out


@torch.no_grad()
def cross_attention(model, text, bert, cache_dir=None, device="cpu"):
    """(attention (N, L), tokens): the decoder's cross-attention for one sentence at its predicted
    length N, averaged over heads and layers, and the L text tokens it attends to."""
    emb = data.text_embeddings([text], bert, cache_dir)[text]                           # (L, E)
    text_emb, text_mask = emb[None].to(device), torch.ones(1, len(emb), dtype=torch.bool, device=device)
    memory = model.encode_text(text_emb, text_mask)                                    # (1, L, D)
    n = int(model.predict_lengths(model.length_ratio(memory, text_mask)))
    frame_mask = torch.ones(1, n, dtype=torch.bool, device=device)
    layout = tuple(x[None].to(device) for x in data.text_layout([text], bert)[text]) if model.aligned_queries else None
    positions, _ = model.align(memory, text_mask, layout, frame_mask)
    attention = model.decode(memory, text_mask, frame_mask, positions, return_attention=True)[2].mean(0)[0]  # (N, L)
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
    p.add_argument("--out", required=True, help="output .pt file: {name: Tensor[N, 178, 3]}")
    p.add_argument("--mean", action="store_true", help="decode the predicted means instead of sampling")
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
    check_device(p, args.device)
    split_path = os.path.join(args.data_dir, f"{args.split}.pt") if args.data_dir else None
    check_out(p, args.out, {"--generator": args.generator, "--data-dir": split_path})
    try:
        for i, t in enumerate(args.text or []):
            if not t.strip():
                raise DataError(f"--text #{i + 1} is empty: nothing to sign")
            data.check_utf8(t, f"--text #{i + 1}")
        if args.text is not None:
            model, vae, ckpt = load_generator(args.generator, args.device)
            poses = generate_poses(model, vae, args.text, ckpt["bert"], not args.mean, args.seed,
                                   args.batch_size, args.cache_dir, device=args.device)
            result = {f"text_{i:03d}": p for i, p in enumerate(poses)}
        else:
            samples = data.load_split(split_path)
            cache_dir = args.cache_dir or os.path.join(os.path.dirname(os.path.abspath(args.out)), "cache")
            result = generate_split(args.generator, samples, not args.mean, args.seed, args.batch_size,
                                    cache_dir, args.device)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_save(result, args.out)
        frames = [len(v) for v in result.values()]
        print(f"wrote {len(result)} sequence(s) to {args.out} ({sum(frames)} frames, "
              f"{min(frames)}-{max(frames)} per sequence)")
    except (DataError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
