"""Every training stage of A²V-SLP in one hand-written DDP loop (§4.3, §4.4, §4.2).

Stages: `vae` (§4.3, Eq. 5-6), `generator` (§3.3/§4.4, Eq. 3-4, 7-8; --phase 1 then --phase 2),
`backtranslation` (the sign-to-text model that scores generated poses, §4.2).

One process (CPU or one GPU); without other flags the stages chain through runs/ (each prints its defaults):
    python train.py --stage vae                 # data: runs/data, the built-in corpus (written on first use)
    python train.py --stage generator --phase 1 # --vae runs/vae/best.pt, out: runs/generator
    python train.py --stage generator --phase 2 # --init runs/generator/best.pt, out: runs/generator-kl
    python train.py --stage backtranslation     # out: runs/backtranslation; then python evaluate.py
Several processes on one machine (nccl on CUDA, gloo on CPU):
    torchrun --standalone --nproc_per_node=4 train.py --stage vae
Several machines: plain torchrun flags on every node, e.g.
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 train.py ...

--batch-size is the global batch; each of the world's ranks takes its share of every global batch,
so a step, and the order of the steps, are the same on any number of ranks (cluster.GlobalBatchSampler).
Restart rule: when OUT_DIR/last.pt exists the run continues from it (--resume auto, the default),
so a torchrun restart after a crash resumes by itself; --resume never refuses to touch such a dir.
A resume must use the flags of the run it continues; only those in RESUMABLE may change. It may use
another number of ranks. On a cluster (cluster.py): SIGTERM or SIGUSR1 saves last.pt after the current
step and exits with status 75; --save-every STEPS also saves inside epochs; OUT_DIR/run.lock keeps a
second run out of the out dir.
"""
import argparse
import logging
import logging.handlers
import math
import os
import sys
import time
import types

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

import cluster
import corpus
import data
import evaluate
import generator as G
from backtranslation import SignToText, build_vocab
from data import ARTICULATOR_ORDER, DataError, atomic_save, load_checkpoint, sigint_deferred
from vae import (PAPER_REC_WEIGHTS, DisentangledVAE, cached_latents, hand_shape_error, load_vae, selection_error,
                 vae_loss)

log = logging.getLogger("a2vslp")

# Flags that may differ when a run is resumed; every other flag defines the run and must match the
# checkpoint's (so flags added later are covered without a change here).
RESUMABLE = ("epochs", "patience", "resume", "num_workers", "skip_bad_samples", "skip_nonfinite",
             "cache_dir", "out_dir", "save_every")
PATH_FLAGS = ("data_dir", "vae", "init")        # compared as absolute paths

# Per-stage defaults of the flags left unset (vae: §4.3; patience None: no early stopping; the paper does not clip)
STAGE_DEFAULTS = {"vae": dict(epochs=300, patience=None, adam_betas=(0.5, 0.9), grad_clip=0.0),
                  "generator": dict(epochs=2000, patience=100, adam_betas=(0.9, 0.999), grad_clip=0.0),
                  "backtranslation": dict(epochs=200, patience=30, adam_betas=(0.9, 0.999), grad_clip=1.0)}
DATA_DIR = os.path.join("runs", "data")             # the built-in corpus, written there on first use
PROGRESS = {"epoch": 0, "step": 0, "saved": None}   # where a Ctrl-C found the run (see __main__); saved: (epoch, batch)


def float_or_none(text):
    return None if text.lower() == "none" else float(text)


def get_args(argv=None, announce=True):
    """The flags; those left unset get their stage's defaults, printed when `announce`."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("common")
    g.add_argument("--stage", required=True, choices=["vae", "generator", "backtranslation"], help="what to train")
    g.add_argument("--data-dir", help="folder with train.pt and dev.pt in the release format "
                   f"(default: {DATA_DIR}, the built-in corpus, written there on first use)")
    g.add_argument("--out-dir", help="checkpoints (last.pt, best.pt) and log.txt go here "
                   "(default: runs/STAGE; generator phase 2: runs/generator-kl)")
    g.add_argument("--epochs", type=int, help="epochs (default: vae 300 as in §4.3; generator 2000 and "
                   "backtranslation 200, both ended earlier by early stopping)")
    g.add_argument("--batch-size", type=int, default=64, help="global batch size (split over ranks)")
    g.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (2e-4 in §4.3 and §4.4)")
    g.add_argument("--adam-betas", type=float, nargs=2,
                   help="Adam betas (default: vae 0.5 0.9 as in §4.3; others 0.9 0.999, not given in the paper)")
    g.add_argument("--lr-decay", default="none", choices=["none", "cosine"],
                   help="none: the paper's schedules (vae: constant; generator: ReduceLROnPlateau); cosine: decay "
                        "to 0 over --epochs, stepped per epoch (for short runs with a fixed budget, e.g. the demo)")
    g.add_argument("--seed", type=int, default=0, help="random seed (each rank and epoch derives its own)")
    g.add_argument("--resume", nargs="?", const="always", default="auto", choices=["auto", "always", "never"],
                   help="auto: continue from OUT_DIR/last.pt when it exists; --resume / always: require it; never: "
                   "start fresh and refuse an out dir that holds a checkpoint. A resume with other flags than the "
                   "checkpoint's is refused, except for " + ", ".join("--" + k.replace("_", "-") for k in RESUMABLE))
    g.add_argument("--cache-dir", help="text-embedding and latent caches, keyed by content (default: OUT_DIR/cache)")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes per rank")
    g.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                   help="also write last.pt every STEPS optimizer steps inside an epoch, so that a killed run loses "
                   "at most STEPS steps (default 0: at the end of each epoch only); a resume from it continues "
                   "the same order of batches")
    g.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (a no-op with a notice on CPU)")
    g.add_argument("--patience", type=int, help="early stopping: epochs without a better dev loss (default: off "
                   "for vae, 100 for generator, 30 for backtranslation)")
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm (default: 1.0 for backtranslation, off "
                   "otherwise; the paper does not clip)")
    g.add_argument("--skip-bad-samples", action="store_true", help="skip malformed samples with a warning")
    g.add_argument("--skip-nonfinite", action="store_true",
                   help="skip a step whose loss is NaN/Inf (counted) instead of stopping the run")
    v = p.add_argument_group("vae (§3.1, §4.3)")
    v.add_argument("--vae-variant", default="base", choices=["base", "csl", "entangled"],
                   help="base: PHOENIX encoders; csl: the larger CSL-Daily encoders; entangled: Table 1 ablation")
    v.add_argument("--beta", type=float, default=1e-3, help="KL weight β of Eq. 5 (the paper: 1e-6 PHOENIX, 1e-7 "
                   "CSL-Daily, for a reconstruction loss whose normalisation it does not give; with this code's "
                   "per-coordinate mean L1, 1e-6 leaves σ at e^-7, so log σ², Eq. 4 and sampling carry nothing; "
                   "1e-3 keeps σ informative, see README)")
    v.add_argument("--w-rh", type=float, default=10.0, help="w_RH of Eq. 6 (§4.3: 10)")
    v.add_argument("--w-lh", type=float, default=14.0, help="w_LH of Eq. 6 (§4.3: 14)")
    v.add_argument("--w-face", type=float, default=2.0, help="w_F of Eq. 6 (§4.3: 2)")
    v.add_argument("--w-body", type=float, default=1.0, help="w_B of Eq. 6 (§4.3: 1)")
    gen = p.add_argument_group("generator (§3.2, §3.3, §4.4)")
    gen.add_argument("--vae", help="trained VAE checkpoint, its frozen encoder gives the targets "
                     "(default: runs/vae/best.pt)")
    gen.add_argument("--phase", type=int, default=1, choices=[1, 2], help="1: L1 on (μ, log σ²); 2: + KL (Eq. 4)")
    gen.add_argument("--init", help="phase 2: the phase-1 checkpoint to start from (default: runs/generator/best.pt)")
    gen.add_argument("--bert", default=data.OFFLINE_BERT,
                     help=f"text encoder, hub name or path (paper: a German BERT such as {data.PAPER_BERT})")
    gen.add_argument("--d-model", type=int, default=512, help="model width (§3.2: 512)")
    gen.add_argument("--enc-layers", type=int, default=3, help="text encoder layers (§3.2: 3)")
    gen.add_argument("--enc-heads", type=int, default=4, help="text encoder heads (§3.2: 4)")
    gen.add_argument("--dec-layers", type=int, default=6, help="decoder layers (§3.2: 6)")
    gen.add_argument("--dec-heads", type=int, default=8, help="decoder heads (§3.2: 8)")
    gen.add_argument("--ff", type=int, default=1024, help="feed-forward width (§3.2: 1024)")
    gen.add_argument("--dropout", type=float, default=0.1, help="dropout (not given in the paper)")
    gen.add_argument("--window", type=int, default=3, help="gloss attention window N (Table 3 best: 3)")
    gen.add_argument("--query", default="none", choices=["none", "mean", "attention"], help="query construction (Table 4)")
    gen.add_argument("--query-span", type=int, default=3, help="query aggregation span q (Table 4)")
    gen.add_argument("--fusion", default="local", choices=["local", "global", "local+global"],
                     help="decoder self-attention: local gloss attention, global (Table 2 baseline) or both")
    gen.add_argument("--max-frames", type=int, help="length normalisation (default: the longest training sequence)")
    gen.add_argument("--hand-weights", default="dynamic", choices=["dynamic", "fixed"],
                     help="dynamic: Eq. 7-8 boost (Table 5 best); fixed: --fixed-weights")
    gen.add_argument("--hand-base", type=float, nargs=2, default=(3.5, 2.5), help="(b_RH, b_LH) of Eq. 7 (Table 5: 3.5 2.5)")
    gen.add_argument("--s-max", type=float, default=4.0, help="s_max of Eq. 8 (Table 5: 4)")
    gen.add_argument("--boost-alpha", type=float, help="α of Eq. 8 (default: HandWeightBoost's)")
    gen.add_argument("--boost-decay", type=float, help="EMA decay of Eq. 8 (default: HandWeightBoost's)")
    gen.add_argument("--fixed-weights", type=float, nargs=3, default=(14.0, 10.0, 2.0),
                     help="fixed λ for (RH, LH, face), body 1 (§4.4.2: 14 10 2)")
    gen.add_argument("--kl-weight", type=float, default=1e-3,
                     help="phase 2 weight of Eq. 4 (not given in the paper; with the default VAE the KL is ~150x the L1 "
                          "of Eq. 3 after phase 1: 1e-3 makes it ~15 %% of the loss; 3e-3 measured no better, see README)")
    gen.add_argument("--logvar-floor", type=float_or_none, default=-8.0,
                     help="Eq. 3 and Eq. 4 clamp predicted and target log σ² from below at this value (not in the "
                          "paper: a β = 1e-6 VAE gives log σ² of -16 ± 9, values that all decode to the same pose, "
                          "and the exact KL to them is ~1e20; below -8 sampling moves the demo VAE's poses by < 0.1x "
                          "its own reconstruction error); none: the paper's literal Eq. 3 and 4")
    gen.add_argument("--logvar-weight", type=float, default=1.0,
                     help="weight γ of the log σ² term of Eq. 3 (the paper: 1)")
    gen.add_argument("--time-queries", default="progress", choices=["progress", "absolute"],
                     help="decoder queries: absolute = reference pose + PE(t), the paper's; progress = + PE of "
                          "t / (N - 1), so frames know the sentence's length (not in the paper)")
    gen.add_argument("--alignment", default="mas", choices=G.ALIGNMENTS,
                     help="where in the text each frame is (not in the paper): mas = monotonic alignment "
                     "search against learned anchors per character, a duration predictor at inference; "
                     "chars / tokens = a constant rate of characters / subword tokens per frame; "
                     "none = the paper's decoder")
    gen.add_argument("--char-embedding", action=argparse.BooleanOptionalAction, default=True,
                     help="add an embedding of the character under each frame to its time query (not in the "
                     "paper; off with --alignment none)")
    gen.add_argument("--guide-weight", type=float, default=1.0,
                     help="weight of the guided-attention loss on the cross-attention (not in the paper; "
                     "0 with --alignment none)")
    gen.add_argument("--guide-width", type=float, default=0.1,
                     help="width g of the guided-attention penalty, in units of the text length")
    gen.add_argument("--length-weight", type=float, default=1.0, help="weight of the length L1 loss")
    gen.add_argument("--weight-decay", type=float, default=1e-4, help="Adam weight decay (§4.4: 1e-4)")
    gen.add_argument("--plateau-factor", type=float, default=0.9, help="ReduceLROnPlateau factor (§4.4: 0.9)")
    gen.add_argument("--plateau-patience", type=int, default=40, help="ReduceLROnPlateau patience (§4.4: 40)")
    bt = p.add_argument_group("backtranslation (§4.2)")
    bt.add_argument("--bt-d-model", type=int, default=128, help="sign-to-text model width")
    bt.add_argument("--bt-layers", type=int, default=2, help="encoder and decoder layers")
    bt.add_argument("--bt-heads", type=int, default=4, help="attention heads")
    bt.add_argument("--bt-ff", type=int, default=256, help="feed-forward width")
    bt.add_argument("--bt-dropout", type=float, default=0.2, help="dropout")
    bt.add_argument("--bt-label-smoothing", type=float, default=0.1, help="label smoothing of the word loss")
    bt.add_argument("--subsample", type=int, default=2, help="frame step: 2 reads 25 fps data at 12.5 fps (§4.2 protocol)")
    args = p.parse_args(argv)
    kl = args.stage == "generator" and args.phase == 2
    chain = {"data_dir": DATA_DIR, "out_dir": os.path.join("runs", "generator-kl" if kl else args.stage),   # runs/
             "vae": os.path.join("runs", "vae", "best.pt") if args.stage == "generator" else None,
             "init": os.path.join("runs", "generator", "best.pt") if kl else None}
    for k, default in {**STAGE_DEFAULTS[args.stage], **chain}.items():
        if getattr(args, k) is None and default is not None:
            setattr(args, k, default)
            if announce and os.environ.get("RANK", "0") == "0":
                print(f"--{k.replace('_', '-')} {default} (default)", flush=True)
            if k in ("vae", "init") and not os.path.exists(default):
                p.error(f"--{k} defaults to {default}, which does not exist: train that stage first or pass --{k} PATH")
    args.adam_betas = tuple(args.adam_betas)
    if args.window < 1 or args.window % 2 == 0:
        p.error(f"--window must be an odd positive number, got {args.window}")
    for name in ("epochs", "batch_size", "subsample", "max_frames", "query_span"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.save_every < 0:
        p.error(f"--save-every must be >= 0, got {args.save_every}")
    alpha, decay = (0.0 if v is None else v for v in (args.boost_alpha, args.boost_decay))   # None: the defaults
    for flag, ok, need in (("--hand-base", all(b > 0 for b in args.hand_base), "two weights > 0"),
                           ("--s-max", args.s_max >= 1, ">= 1"), ("--boost-alpha", alpha >= 0, ">= 0"),
                           ("--boost-decay", 0 <= decay < 1, "in [0, 1)")):   # Eq. 7-8 (HandWeightBoost)
        if not ok:
            p.error(f"{flag} must be {need}, got {getattr(args, flag[2:].replace('-', '_'))}")
    if args.alignment == "none":   # no alignment: no character under a frame, nothing to guide toward
        args.guide_weight, args.char_embedding = 0.0, False
    args.cache_dir = args.cache_dir or os.path.join(args.out_dir, "cache")
    return args


# Stages: from the train and dev samples, each returns the model, the datasets, the loss and what its
# checkpoint must carry.
# loss(model, batch) -> (loss, {name: value}, count): `count` is what the loss averages over
# (frames, tokens), so the loop can weight each rank and make a split batch equal a whole one.

def vae_stage(args, train, dev, device, distributed):
    model = DisentangledVAE(args.vae_variant)
    frames = torch.cat([s["poses_3d"] for s in train])                    # (ΣN, 178, 3)
    model.set_pose_stats(frames.mean(0), frames.std(0))
    weights = {"body": args.w_body, "right_hand": args.w_rh, "left_hand": args.w_lh, "face": args.w_face}

    def loss(m, batch):
        x, mask = batch["poses"], batch["frame_mask"]                      # (B, T, 178, 3), (B, T)
        x_hat, mu, logvar = m(x, sample=m.training)                      # dev: z = μ, as generated
        total, logs = vae_loss(x_hat, x, mu, logvar, mask, weights, args.beta)   # Eq. (5)
        if not m.training:
            logs.update(selection_error(x_hat, x, mask, weights)[1])
        return total, logs, mask.sum()

    @torch.no_grad()
    def report(m):
        """Dev L1 per articulator and the wrist-relative hand-shape error: the VAE (z = μ) against
        predicting the mean training pose."""
        x = torch.cat([s["poses_3d"] for s in dev]).to(device)            # (ΣN, 178, 3)
        x_hat, mean_pose = m.eval().reconstruct(x), frames.mean(0).to(device).expand_as(x)
        for a in ARTICULATOR_ORDER:
            err, base = ((y - x)[:, data.ARTICULATORS[a]].abs().mean().item() for y in (x_hat, mean_pose))
            log.info("dev L1 %-10s VAE %.5f  mean pose %.5f  (%.1fx lower)", a, err, base, base / max(err, 1e-12))
        ones = torch.ones(1, len(x), dtype=torch.bool, device=device)
        shape, base = hand_shape_error(x_hat[None], x[None], ones), hand_shape_error(mean_pose[None], x[None], ones)
        for a in shape:
            log.info("dev hand shape %-10s VAE %.5f  mean pose %.5f  (%.1fx lower; finger joints relative "
                     "to the wrist)", a, shape[a], base[a], base[a] / max(float(shape[a]), 1e-12))

    return {"model": model, "train": data.SignDataset(train), "dev": data.SignDataset(dev), "loss": loss,
            "report": report, "extra": {"model_args": {"variant": args.vae_variant}}, "criterion": "select"}


def generator_stage(args, train, dev, device, distributed):
    try:
        vae = load_vae(load_checkpoint(args.vae, "vae"), map_location=device)
    except (DataError, KeyError, TypeError, RuntimeError, AssertionError) as e:   # AssertionError: bad model_args
        raise DataError(f"--vae {e}" if isinstance(e, DataError) else f"--vae {args.vae}: not a usable VAE "
                        f"checkpoint: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    # Text embeddings and latent targets: computed once, by rank 0, and cached on disk.
    emb = rank0_first(distributed, data.text_embeddings, [s["text"] for s in train + dev], args.bert, args.cache_dir)
    layout = data.text_layout([s["text"] for s in train + dev], args.bert) if args.alignment != "none" else None
    lat = {**rank0_first(distributed, cached_latents, args.vae, train, args.cache_dir),
           **rank0_first(distributed, cached_latents, args.vae, dev, args.cache_dir)}
    max_frames = args.max_frames or max(len(s["poses_3d"]) for s in train)
    model_args = dict(text_dim=next(iter(emb.values())).shape[-1], max_frames=max_frames, query_span=args.query_span,
                      **{k: getattr(args, k) for k in ("d_model", "enc_layers", "enc_heads", "dec_layers", "dec_heads",
                                                       "ff", "dropout", "window", "query", "fusion", "time_queries",
                                                       "alignment", "char_embedding")})
    model = G.A2VSLP(**model_args)
    # §3.2: the stationary reference pose (hands resting down). Estimated as the per-coordinate
    # median of the first frame of every training sequence (signing starts from rest).
    model.set_reference_pose(torch.stack([s["poses_3d"][0] for s in train]).median(0).values)
    if args.phase == 2:
        init = load_checkpoint(args.init, "generator")
        if init["model_args"] != model_args:
            diff = {k: (init["model_args"].get(k), v) for k, v in model_args.items() if init["model_args"].get(k) != v}
            raise DataError(f"--init {args.init}: incompatible configuration (checkpoint vs flags): {diff}")
        model.load_state_dict(init["model"])
    boost = None
    if args.hand_weights == "dynamic":
        kw = {k: v for k, v in (("alpha", args.boost_alpha), ("ema_decay", args.boost_decay)) if v is not None}
        boost = G.HandWeightBoost(base=tuple(args.hand_base), s_max=args.s_max, **kw)
        if args.phase == 2:
            restore(boost, init, "stage_state", f"--init {args.init}")   # phase 2 continues phase 1's s(t) and EMAs
    floor = args.logvar_floor
    fixed = dict(zip(("right_hand", "left_hand", "face"), args.fixed_weights), body=1.0)

    def loss(m, batch):
        mask = batch["frame_mask"]                                         # (B, T)
        mu, logvar = batch["latent"].chunk(2, -1)                          # (B, T, 80) each
        guide = args.guide_weight > 0 and m.training
        layout = (batch["text_spans"], batch["text_chars"]) if "text_spans" in batch else None
        out = m(batch["text_emb"], batch["text_mask"], mask, layout, target_mu=mu, return_attention=guide)
        weights = boost.weights(face=fixed["face"], body=1.0) if boost is not None else fixed
        l1, terms = G.latent_l1_loss(out["mu"], out["logvar"], mu, logvar, mask, weights, floor,
                                     args.logvar_weight)                                    # Eq. (3)
        length = G.length_loss(out["length_ratio"], batch["lengths"], max_frames)
        total = l1 + args.length_weight * length
        logs = {"latent_l1": l1, "length": length, **{f"L_{a}": t for a, t in terms.items()}}
        for k in ("anchor", "duration"):   # the alignment search's anchors and the duration predictor
            if k in out:
                logs[k] = out[k]
                total = total + out[k]
        if guide:
            p, prior = out["positions"]
            logs["guide"] = G.guided_attention_loss(out["attention"], prior, p, batch["text_mask"], mask, args.guide_width)
            total = total + args.guide_weight * logs["guide"]
        if args.phase == 2:
            kl = G.gaussian_kl(out["mu"], out["logvar"], mu, logvar, mask, floor)          # Eq. (4)
            total = total + args.kl_weight * kl
            logs["kl"] = kl
        if not m.training:   # dev (under no_grad): the decoded means against the true poses, fixed weights
            logs.update(selection_error(vae.decode(out["mu"]), batch["poses"], mask, PAPER_REC_WEIGHTS)[1])
        if boost is not None and m.training:
            pair = torch.stack([terms["right_hand"] + terms["left_hand"], terms["body"] + terms["face"]]).detach() / 2
            hand, other = all_reduce_sum(pair, distributed) / (dist.get_world_size() if distributed else 1)  # same s(t)
            if math.isfinite(hand + other):   # else the loss is not finite either: the loop stops or skips the step
                logs["s"] = torch.tensor(float(boost.step(float(hand), float(other))))     # Eq. (8)
        return total, logs, mask.sum()

    extra = {"model_args": model_args, "vae": vae.state_dict(), "vae_model_args": {"variant": vae.variant},
             "bert": args.bert, "max_tokens": data.MAX_TOKENS, "phase": args.phase}
    return {"model": model, "loss": loss, "extra": extra, "criterion": "select", "state": boost,
            "train": data.SignDataset(train, emb, lat, layout), "dev": data.SignDataset(dev, emb, lat, layout)}


def backtranslation_stage(args, train, dev, device, distributed):
    model = SignToText(build_vocab([s["text"] for s in train]), d_model=args.bt_d_model,
                       num_heads=args.bt_heads, num_layers=args.bt_layers, ff=args.bt_ff, dropout=args.bt_dropout,
                       label_smoothing=args.bt_label_smoothing)
    step = args.subsample

    def loss(m, batch):
        poses, mask = batch["poses"][:, ::step], batch["frame_mask"][:, ::step]   # 12.5 fps (§4.2)
        total, stats = m(poses, mask, batch["texts"])
        return total, stats, torch.as_tensor(stats.pop("tokens"))

    def report(m):
        hyps = evaluate.back_translate(m.eval(), [s["poses_3d"][::step] for s in dev], beam_size=1, device=device)
        refs = [s["text"] for s in dev]
        log.info("dev back-translation of ground truth (greedy): BLEU-4 %.2f  chrF %.2f",
                 evaluate.bleu(hyps, refs, 4), evaluate.chrf(hyps, refs))

    return {"model": model, "loss": loss, "report": report,
            "train": data.SignDataset(train), "dev": data.SignDataset(dev),
            "extra": {"model_args": model.config(), "subsample": step}}


STAGES = {"vae": vae_stage, "generator": generator_stage, "backtranslation": backtranslation_stage}


# The training loop

def setup_distributed():
    """(rank, world_size, device); without RANK in the environment: one plain process."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # The store outlives a torchrun restart; without a per-attempt key prefix the restarted workers
    # read the dead workers' addresses and gloo hangs connecting to them.
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=rank == 0 and not agent_store, multi_tenant=not agent_store)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend, store=dist.PrefixStore(f"a2vslp/attempt{attempt}", store),
                            rank=rank, world_size=world)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return rank, world, device


LOG_FORMAT = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")


def setup_logging(master):
    """stdout now; on rank 0 the records are also held back for log.txt, which open_log_file
    starts once the run is accepted (a refused run leaves log.txt as it was)."""
    log.handlers.clear()
    log.setLevel(logging.INFO if master else logging.WARNING)
    log.propagate = False
    held = [logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)] if master else []
    for h in [logging.StreamHandler(sys.stdout), *held]:
        h.setFormatter(LOG_FORMAT)
        log.addHandler(h)


def open_log_file(out_dir):
    """Append the held-back records, and all later ones, to OUT_DIR/log.txt."""
    file = logging.FileHandler(os.path.join(out_dir, "log.txt"))
    file.setFormatter(LOG_FORMAT)
    held = next(h for h in log.handlers if isinstance(h, logging.handlers.MemoryHandler))
    held.setTarget(file)
    held.flush()
    log.removeHandler(held)
    log.addHandler(file)


def dev_shard(n, rank, world):
    """Indices of this rank's dev samples: every sample on exactly one rank, shard sizes differing by at most
    one. Ranks may then run different numbers of dev batches: run_epoch's dev pass has one collective, at its end."""
    return list(range(rank, n, world))


def rank0_first(distributed, fn, *args):
    """fn(*args) on rank 0, then on the other ranks: what rank 0 writes (caches, the corpus), they read."""
    if distributed and dist.get_rank() != 0:
        dist.barrier()
    out = fn(*args)
    if distributed and dist.get_rank() == 0:
        dist.barrier()
    return out


def all_reduce_sum(t, distributed):
    if distributed:
        dist.all_reduce(t)
    return t


def run_epoch(model, loader, loss_fn, run, epoch, step, optimizer=None, first_batch=0):
    """One pass over `loader`; trains when optimizer is given. `run` holds args, device, distributed
    and ctx (the autocast context); training also uses run.stand_in, run.preempt and run.after_step
    (see main). first_batch: the global batches of this epoch done before a mid-epoch resume.
    Returns (mean logs, frames, step, skips)."""
    args, device, distributed, ctx = run.args, run.device, run.distributed, run.ctx
    sums, count_total, frames, skips, nonfinite = {}, torch.zeros((), dtype=torch.float64, device=device), 0, 0, []
    world = dist.get_world_size() if distributed else 1
    for done, batch in enumerate(loader, start=first_batch + 1):     # done: global batches after this one
        stand_in = batch is None      # no sample of this rank in the epoch's last, small global batch
        batch = run.stand_in if stand_in else batch
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        with ctx:
            loss, logs, count = loss_fn(model, batch)
        count = count.to(device=device, dtype=torch.float64) * (0.0 if stand_in else 1.0)   # a stand-in weighs 0
        # Weight this rank's mean by its share of the global count: a batch split over ranks then
        # gives exactly the gradient of the whole batch in one process (DDP averages over ranks).
        finite = torch.tensor(float(torch.isfinite(loss.detach()).item()), dtype=torch.float64, device=device)
        if optimizer is not None:     # training: every rank takes every step (GlobalBatchSampler, stand-ins)
            # one all-reduce per step: the global count, the ranks with a finite loss, the ranks that caught
            # a preemption signal (so that all stop after the same step)
            caught = torch.tensor(float(bool(run.preempt)), dtype=torch.float64, device=device)
            global_count, finite, stop = all_reduce_sum(torch.stack([count, finite, caught]), distributed)
            scale = (count * world / global_count).float()
            stop = stop.item() > 0
        else:                         # dev: shards differ by one batch, so no collective per batch
            finite = finite * world
        if finite.item() < world:
            where = f"stage {args.stage}, epoch {epoch + 1}, step {step + 1}, samples {batch['names']}"
            if optimizer is None:     # raised below, on every rank at once
                nonfinite.append(f"{where}, dev loss {loss.item()}")
                continue
            if not args.skip_nonfinite:
                raise FloatingPointError(f"non-finite loss ({loss.item()}) at {where}; the last good "
                                         "checkpoint is kept (use --skip-nonfinite to skip such steps)")
            skips += 1
            log.warning("non-finite loss skipped (%s); %d skipped so far", where, skips)
            run.after_step(epoch, step, done, stop)
            continue
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            (loss * scale).backward()
            if args.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            step += 1
            PROGRESS["step"] = step
            run.after_step(epoch, step, done, stop)
        for k, v in {"loss": loss, **logs}.items():
            sums[k] = sums.get(k, 0.0) + torch.as_tensor(v, dtype=torch.float64, device=device).detach() * count
        count_total += count
        frames += 0 if stand_in else int(batch["frame_mask"].sum())
    keys = sorted(sums)
    if distributed:                   # a rank may have had no dev batch: agree on the logged names
        every = [None] * world
        dist.all_gather_object(every, keys)
        keys = sorted(set().union(*every))
    extra = torch.tensor([float(frames), float(len(nonfinite))], dtype=torch.float64, device=device)
    packed = all_reduce_sum(torch.cat([torch.stack([sums.get(k, count_total.new_zeros(())) for k in keys] + [count_total]), extra]),
                            distributed)                                    # one all-reduce
    if packed[-1].item() > 0:
        raise FloatingPointError(f"non-finite loss at {nonfinite[0] if nonfinite else 'a dev batch of another rank'}; "
                                 "the last good checkpoint is kept")
    means = {k: (packed[i] / packed[-3]).item() for i, k in enumerate(keys)}
    return means, int(packed[-2].item()), step, skips


def changed_flags(args, saved):
    """Flags of this call that differ from the checkpoint's `args`, outside RESUMABLE, as
    "--flag: OLD in the checkpoint, NEW now"; a flag the checkpoint predates counts as its default."""
    defaults = vars(get_args(["--stage", args.stage, "--data-dir", ".", "--out-dir", ".", "--vae", ".", "--init", "."],
                             announce=False))

    def norm(k, v):
        return os.path.abspath(v) if k in PATH_FLAGS and isinstance(v, str) else tuple(v) if isinstance(v, list) else v

    return [f"--{k.replace('_', '-')}: {saved.get(k, defaults.get(k))} in the checkpoint, {v} now"
            for k, v in vars(args).items()
            if k not in RESUMABLE and norm(k, saved.get(k, defaults.get(k))) != norm(k, v)]


def restore(part, ckpt, key, where):
    """part.load_state_dict(ckpt[key]) when both exist; a damaged entry is one DataError naming `where`."""
    if part is not None and ckpt.get(key) is not None:
        try:
            part.load_state_dict(ckpt[key])
        except (KeyError, TypeError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise DataError(f"{where}: damaged {key!r}: {type(e).__name__}: {first}") from None


def check_out_dir(args, last_path, best_path):
    """The checkpoint to resume from, or None for a fresh run; refuses (before anything is written)
    a run that would overwrite a checkpoint or resume one made with other flags."""
    held = [p for p in (last_path, best_path) if os.path.exists(p)]
    if args.resume == "never" and held:
        raise DataError(f"--resume never: {held[0]} exists; choose another --out-dir (nothing was changed)")
    if args.resume == "always" and not os.path.exists(last_path):
        raise DataError(f"--resume: {last_path} does not exist")
    if not os.path.exists(last_path) or args.resume == "never":
        if held:
            raise DataError(f"{best_path} exists but {last_path} does not: nothing to resume, and a fresh run "
                            "would overwrite best.pt; choose another --out-dir (nothing was changed)")
        return None
    ckpt = load_checkpoint(last_path, args.stage)
    diff = changed_flags(args, ckpt["args"] if isinstance(ckpt.get("args"), dict) else {})
    if diff:
        raise DataError(f"{last_path}: incompatible with these flags, a resume keeps the run's settings "
                        f"(use another --out-dir for a new run): {'; '.join(diff)}")
    return ckpt


def main(argv=None):
    args = get_args(argv)
    rank, world, device = setup_distributed()
    distributed, master = world > 1, rank == 0
    setup_logging(master)
    preempt = cluster.catch_preemption()      # SIGTERM / SIGUSR1: finish the step, save last.pt, exit 75
    if args.batch_size % world:
        raise DataError(f"--batch-size {args.batch_size} must be divisible by the world size {world}")
    cluster.lock_out_dir(args.out_dir, distributed)           # one run per out dir (OUT_DIR/run.lock)
    last_path, best_path = os.path.join(args.out_dir, "last.pt"), os.path.join(args.out_dir, "best.pt")
    ckpt = check_out_dir(args, last_path, best_path)          # None: a fresh run
    if args.data_dir == DATA_DIR:
        rank0_first(distributed, corpus.write_default_corpus, DATA_DIR)
    if args.amp and device.type != "cuda":
        log.info("--amp: bf16 autocast is for CUDA; running in float32 on %s", device.type)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if args.amp and device.type == "cuda" else torch.autocast("cpu", enabled=False)
    run = types.SimpleNamespace(args=args, device=device, distributed=distributed, ctx=ctx, preempt=preempt)

    torch.manual_seed(args.seed)                       # same initial weights on every rank
    paths = [os.path.join(args.data_dir, f"{split}.pt") for split in ("train", "dev")]
    train, dev = (data.load_split(path, args.skip_bad_samples) for path in paths)
    data.check_unique_names(dict(zip(paths, (train, dev))))
    stage = STAGES[args.stage](args, train, dev, device, distributed)
    model = stage["model"].to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("stage %s | world %d on %s | %d trainable parameters | %d train / %d dev samples",
             args.stage, world, device, n_params, len(stage["train"]), len(stage["dev"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=args.adam_betas,
                                 weight_decay=args.weight_decay if args.stage == "generator" else 0.0)
    scheduler = None
    if args.lr_decay == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    elif args.stage == "generator":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=args.plateau_factor, patience=args.plateau_patience)

    start_epoch, step, best, bad_epochs, val, first_batch, rng = 0, 0, math.inf, 0, None, 0, None
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise DataError(f"{last_path}: incompatible with the model built from these flags: "
                            f"{str(e).splitlines()[0]}") from None
        for part, key in ((optimizer, "optimizer"), (scheduler, "scheduler"), (stage.get("state"), "stage_state")):
            restore(part, ckpt, key, last_path)
        start_epoch, step, best, bad_epochs = ckpt["epoch"], ckpt["step"], ckpt["best_val"], ckpt["bad_epochs"]
        val, first_batch = ckpt.get("val"), ckpt.get("batch", 0)        # batch: global batches of the next epoch done
        saved_world = ckpt.get("world_size", 1)
        if isinstance(ckpt.get("rng"), list) and len(ckpt["rng"]) == world:
            rng = ckpt["rng"][rank]                    # a mid-epoch resume continues this rank's noise stream
        log.info("resumed from %s at epoch %d, batch %d, step %d%s", last_path, start_epoch, first_batch, step,
                 "" if saved_world == world else f" (saved under world size {saved_world}, now {world}: the same global "
                 "batches in the same order; the per-rank noise streams of a mid-epoch resume start anew)")
        PROGRESS.update(step=step, saved=(start_epoch, first_batch))
    os.makedirs(args.out_dir, exist_ok=True)
    if master:
        open_log_file(args.out_dir)                    # the run is accepted: log.txt from here on

    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if distributed else model
    sampler = cluster.GlobalBatchSampler(len(stage["train"]), args.batch_size, rank, world, args.seed)
    # its own generator: making an iterator then draws nothing from the global one (the noise streams)
    loader = DataLoader(stage["train"], batch_sampler=sampler, collate_fn=cluster.collate_share,
                        num_workers=args.num_workers, generator=torch.Generator())
    kw = dict(batch_size=args.batch_size // world, collate_fn=data.collate, num_workers=args.num_workers)
    dev_loader = DataLoader(torch.utils.data.Subset(stage["dev"], dev_shard(len(stage["dev"]), rank, world)), **kw)
    run.stand_in = data.collate([stage["train"][0]])  # what a rank without a sample in a global batch runs, weighted 0

    def save(epoch, step, batch, improved=False):
        """last.pt (and best.pt when improved) after `epoch` epochs and `batch` global batches of the
        next one; on every rank together (the ranks' noise streams are gathered)."""
        rng_states = cluster.rng_states(distributed)
        with sigint_deferred():              # a Ctrl-C here waits for the saves: last.pt and the message agree
            if master:
                ckpt = {"stage": args.stage, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None, "args": vars(args),
                        "epoch": epoch, "batch": batch, "step": step, "best_val": best, "val": val,
                        "bad_epochs": bad_epochs, "world_size": world, "rng": rng_states,
                        "stage_state": stage["state"].state_dict() if stage.get("state") is not None else None,
                        **stage["extra"]}
                if improved:
                    atomic_save(ckpt, best_path)
                atomic_save(ckpt, last_path)
            PROGRESS["saved"] = (epoch, batch)
        if distributed:
            dist.barrier()

    def stop(epoch, step, batch):
        """Every rank has caught, or heard of, a preemption signal and last.pt holds this point."""
        where = f"step {step} (epoch {epoch + 1}, batch {batch} of {sampler.batches_per_epoch()})" if batch else \
            f"step {step} (the end of epoch {epoch})"
        message = (f"preempted ({', '.join(sorted(set(preempt))) or 'signal caught by another rank'}): stopped after "
                   f"{where}; {last_path} holds it, the same command continues from there (exit {cluster.PREEMPTED})")
        log.info("%s", message)
        raise cluster.Preempted(message if master else "")

    def after_step(epoch, step, done, stop_now):
        """A mid-epoch last.pt every --save-every steps, and when the ranks agreed to stop (then Preempted)."""
        if stop_now or (args.save_every and step % args.save_every == 0 and done < sampler.batches_per_epoch()):
            save(epoch, step, done)
        if stop_now:
            stop(epoch, step, done)

    run.after_step = after_step

    t_start = time.time()
    for epoch in range(start_epoch, args.epochs):
        PROGRESS["epoch"] = epoch + 1
        sampler.set_epoch(epoch, first_batch)
        torch.manual_seed(args.seed + 1_000_003 * (epoch + 1) + rank)   # resumable noise streams
        if first_batch and rng is not None:
            cluster.set_rng_state(rng)
        ddp.train()
        t0 = time.time()
        train_logs, frames, step, skips = run_epoch(ddp, loader, stage["loss"], run, epoch, step, optimizer,
                                                    first_batch)
        dt = time.time() - t0
        ddp.eval()
        with torch.no_grad():
            dev_logs, _, _, _ = run_epoch(model, dev_loader, stage["loss"], run, epoch, step)
        val = dev_logs[stage.get("criterion", "loss")]     # a dev criterion whose meaning is fixed
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val)
        elif scheduler is not None:
            scheduler.step()
        improved = val < best
        best, bad_epochs = (val, 0) if improved else (best, bad_epochs + 1)
        fmt = lambda d: " ".join(f"{k} {d[k]:.4g}" for k in sorted(d, key=lambda k: (k != "loss", k)))  # noqa: E731
        log.info("epoch %d/%d step %d | train %s | dev %s | %.0f frames/s | lr %.2e | %.0fs%s%s%s",
                 epoch + 1, args.epochs, step, fmt(train_logs), fmt(dev_logs), frames / max(dt, 1e-9),
                 optimizer.param_groups[0]["lr"], time.time() - t_start, " *" if improved else "",
                 f" | {skips} skipped" if skips else "",
                 f" | train logs of batches {first_batch + 1}+ (resumed)" if first_batch else "")
        first_batch = 0
        bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise FloatingPointError(f"stage {args.stage}, epoch {epoch + 1}: non-finite weights in {bad[:3]}; "
                                     f"not saved, the last good checkpoint in {args.out_dir} is kept")
        save(epoch + 1, step, 0, improved)
        if args.patience and bad_epochs >= args.patience:
            log.info("early stopping: no better dev %s for %d epochs", stage.get("criterion", "loss"), bad_epochs)
            break
        caught = all_reduce_sum(torch.tensor(float(bool(preempt)), device=device), distributed)   # during dev or save
        if caught.item() > 0 and epoch + 1 < args.epochs:
            stop(epoch + 1, step, 0)
    if master and stage.get("report") is not None and os.path.exists(best_path):
        model.load_state_dict(load_checkpoint(best_path, args.stage)["model"])
        stage["report"](model)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FloatingPointError, OSError) as e:      # DataError is a ValueError
        sys.exit(f"error: {e}")
    except cluster.Preempted as e:
        if str(e):
            print(e, file=sys.stderr)
        cluster.exit_quietly()
        sys.exit(cluster.PREEMPTED)
    except KeyboardInterrupt:
        where = (f"interrupted at epoch {PROGRESS['epoch']} step {PROGRESS['step']}" if PROGRESS["epoch"]
                 else "interrupted before training started")
        epoch, batch = PROGRESS["saved"] or (0, 0)
        saved = (f"last.pt is epoch {epoch}" + (f" + {batch} batches" if batch else "") if PROGRESS["saved"]
                 else "no last.pt was written")
        print(f"{where}; {saved}", file=sys.stderr)
        sys.exit(130)
