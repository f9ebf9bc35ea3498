"""Training and inference throughput of the VAE and the generator on this machine.

    .venv/bin/python benchmarks/throughput.py            # paper-sized generator (d_model 512)
    .venv/bin/python benchmarks/throughput.py --quick    # fewer repeats

Measures, on random inputs of realistic shape (sequences of --frames frames, sentences of --tokens
tokens, 384-d text embeddings as from the offline encoder):
- VAE stage: frames/s of a training step (forward, Eq. 5 loss, backward, Adam) and of encoding;
- generator: sentences/s and frames/s of a training step (Eq. 3 loss) and of inference
  (generate: one decoder pass + VAE decoding), with gloss attention (N = 3) and with global
  self-attention (the Table 2 baseline), with the default alignment (monotonic alignment search,
  guided attention) and without it (the paper's decoder), side by side in one run.
Each number is the median of --repeats timed runs after one warm-up.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import generator as G  # noqa: E402
import vae as V  # noqa: E402


def median_time(fn, repeats):
    fn()                                                     # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def vae_rows(args):
    torch.manual_seed(0)
    model = V.DisentangledVAE("base")
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.9))
    x = torch.randn(args.batch, args.frames, 178, 3)          # (B, T, 178, 3)
    mask = torch.ones(args.batch, args.frames, dtype=torch.bool)
    w = V.PAPER_REC_WEIGHTS

    def train_step():
        x_hat, mu, logvar = model(x)
        loss, _ = V.vae_loss(x_hat, x, mu, logvar, mask, w, 1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def encode():
        with torch.no_grad():
            model.encode(x)

    frames = args.batch * args.frames
    return [("VAE train step", "-", frames / median_time(train_step, args.repeats), None),
            ("VAE encode", "-", frames / median_time(encode, args.repeats), None)]


def text_layout(B, tokens, chars_per_token=5):
    """A layout like data.text_layout's: [CLS], tokens of 5 characters, [SEP]."""
    ends = torch.arange(tokens - 1).float().clamp(max=tokens - 2) * chars_per_token   # (tokens - 1,)
    spans = torch.stack([torch.cat([ends[:1], ends[:-1]]), ends], -1)                 # (tokens - 1, 2)
    spans = torch.cat([spans, spans[-1:, 1:].repeat(1, 2)])                           # (tokens, 2)
    units = (tokens - 2) * chars_per_token + 2
    chars = torch.randint(1, 28, (B, units))
    chars[:, 0] = chars[:, -1] = 0
    return spans.expand(B, -1, -1), chars


def generator_rows(args, fusion, alignment="mas"):
    torch.manual_seed(0)
    model = G.A2VSLP(text_dim=384, d_model=args.d_model, ff=2 * args.d_model, fusion=fusion,
                     max_frames=args.frames, dropout=0.1, alignment=alignment,
                     char_embedding=alignment != "none")
    model.set_reference_pose(torch.randn(178, 3))
    vae = V.DisentangledVAE("base").eval()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-4)
    B, T = args.batch, args.frames
    text = torch.randn(B, args.tokens, 384)
    text_mask = torch.ones(B, args.tokens, dtype=torch.bool)
    frame_mask = torch.ones(B, T, dtype=torch.bool)
    mu, logvar = torch.randn(B, T, 80), torch.randn(B, T, 80)
    weights = {"body": 1.0, "right_hand": 14.0, "left_hand": 10.0, "face": 2.0}
    layout = text_layout(B, args.tokens) if alignment != "none" else None

    def train_step():   # the generator stage's loss: Eq. 3, and with an alignment its own terms
        model.train()
        out = model(text, text_mask, frame_mask, layout, target_mu=mu, return_attention=layout is not None)
        loss, _ = G.latent_l1_loss(out["mu"], out["logvar"], mu, logvar, frame_mask, weights)
        if layout is not None:
            p, prior = out["positions"]
            loss = loss + out["anchor"] + out["duration"] + G.guided_attention_loss(
                out["attention"], prior, p, text_mask, frame_mask, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        model.generate(text, text_mask, vae.decode, lengths=torch.full((B,), T), layout=layout)

    name = ("gloss attention N=3" if fusion == "local" else "global self-attention") + \
        (", alignment" if alignment != "none" else ", no alignment")
    t_train, t_inf = median_time(train_step, args.repeats), median_time(infer, args.repeats)
    return [(f"generator train step, {name}", B / t_train, B * T / t_train, t_train),
            (f"generator inference, {name}", B / t_inf, B * T / t_inf, t_inf)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32, help="sequences per batch")
    p.add_argument("--frames", type=int, default=128, help="frames per sequence")
    p.add_argument("--tokens", type=int, default=24, help="text tokens per sentence")
    p.add_argument("--d-model", type=int, default=512, help="generator width (paper: 512)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per row (median)")
    p.add_argument("--quick", action="store_true", help="2 repeats")
    args = p.parse_args()
    if args.quick:
        args.repeats = 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} x "
          f"{args.frames} frames, {args.tokens} tokens, generator d_model {args.d_model}")
    rows = vae_rows(args) + generator_rows(args, "local") + generator_rows(args, "local", "none") \
        + generator_rows(args, "global")
    print(f"| {'what':44s} | {'sentences/s':>11s} | {'frames/s':>10s} |")
    print(f"|{'-' * 46}|{'-' * 13}|{'-' * 12}|")
    for name, sents, frames, _ in rows:
        s = f"{sents:11.1f}" if isinstance(sents, float) else f"{sents:>11s}"
        print(f"| {name:44s} | {s} | {frames:10.0f} |")


if __name__ == "__main__":
    main()
