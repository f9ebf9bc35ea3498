"""Every training stage of A²V-SLP in one hand-written DDP loop (§4.3, §4.4, §4.2).

Stages: `vae` (§4.3, Eq. 5-6), `generator` (§3.3/§4.4, Eq. 3-4, 7-8; --phase 1 then --phase 2),
`backtranslation` (the sign-to-text model that scores generated poses, §4.2).

One process (CPU or one GPU); without flags the stages chain through runs/ (printing defaults):
    python train.py --stage vae                  # the built-in corpus, written to runs/data once
    python train.py --stage generator --phase 1  # --vae runs/vae/best.pt → runs/generator
    python train.py --stage generator --phase 2  # --init runs/generator/best.pt → ...-kl
    python train.py --stage backtranslation      # → runs/backtranslation; then python evaluate.py
Several processes (nccl on CUDA, gloo on CPU); several machines: plain torchrun flags on every node:
    torchrun --standalone --nproc_per_node=4 train.py --stage vae

--batch-size is the global batch, split over the ranks so that the steps are the same on any
number of them. A run continues from OUT_DIR/last.pt when it exists (--resume auto), with the same
flags (but RESUMABLE) on any number of ranks; SIGTERM/SIGUSR1 save last.pt and exit 75 (cluster.py).
Hyperparameters are fields of VAEConfig, GeneratorConfig, BackTranslatorConfig beside each model,
one field one flag (docs/adding-a-flag.md); the rest of the harness is in harness.py.
"""
import argparse
import dataclasses
import logging
import math
import os
import time
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

import cluster
import corpus
import data
import evaluate
import generator as G
import harness
from backtranslation import BackTranslatorConfig, SignToText, build_vocab
from harness import DataError, all_reduce_sum, from_args, model_args, rank0_first
from vae import PAPER_REC_WEIGHTS, DisentangledVAE, VAEConfig, cached_latents, load_vae, \
    log_against_mean_pose, selection_error, vae_loss

log = logging.getLogger("a2vslp")

# Flags that may differ when a run is resumed; every other flag defines the run and must match the
# checkpoint's (so flags added later are covered without a change here).
RESUMABLE = ("epochs", "patience", "resume", "num_workers", "skip_bad_samples", "skip_nonfinite",
             "cache_dir", "out_dir", "save_every")
PATH_FLAGS = ("data_dir", "vae", "init")        # compared as absolute paths
# Per-stage defaults of unset flags (vae: §4.3; patience None: no early stopping; no clipping in
# the paper)
STAGE_DEFAULTS = {
    "vae": dict(epochs=300, patience=None, adam_betas=(0.5, 0.9), grad_clip=0.0),
    "generator": dict(epochs=2000, patience=100, adam_betas=(0.9, 0.999), grad_clip=0.0),
    "backtranslation": dict(epochs=200, patience=30, adam_betas=(0.9, 0.999), grad_clip=1.0)}
DATA_DIR = os.path.join("runs", "data")       # the built-in corpus, written there on first use
CONFIGS = (VAEConfig, G.GeneratorConfig, BackTranslatorConfig)


def get_args(argv=None, announce=True):
    """The flags; those left unset get their stage's defaults, printed when `announce`."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("common")
    g.add_argument("--stage", required=True, choices=list(STAGE_DEFAULTS), help="what to train")
    g.add_argument("--data-dir", help="folder with train.pt and dev.pt in the release format "
                   f"(default: {DATA_DIR}, the built-in corpus, written there on first use)")
    g.add_argument("--out-dir", help="checkpoints (last.pt, best.pt) and log.txt go here "
                   "(default: runs/STAGE; generator phase 2: runs/generator-kl)")
    g.add_argument("--epochs", type=int, help="epochs (default: vae 300 as in §4.3; generator "
                   "2000 and backtranslation 200, both ended earlier by early stopping)")
    g.add_argument("--batch-size", type=int, default=64, help="global batch (split over ranks)")
    g.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (§4.3, §4.4: 2e-4)")
    g.add_argument("--adam-betas", type=float, nargs=2, help="Adam betas (default: vae 0.5 0.9 as "
                   "in §4.3; others 0.9 0.999, not given in the paper)")
    g.add_argument("--lr-decay", default="none", choices=["none", "cosine"],
                   help="none: the paper's schedules (vae: constant; generator: "
                   "ReduceLROnPlateau); cosine: decay to 0 over --epochs, stepped per epoch (for "
                   "short runs with a fixed budget, e.g. the demo)")
    g.add_argument("--seed", type=int, default=0, help="seed (ranks and epochs derive theirs)")
    g.add_argument("--patience", type=int, help="early stopping: epochs without a better dev loss "
                   "(default: off for vae, 100 for generator, 30 for backtranslation)")
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm (default: 1.0 for "
                   "backtranslation, off otherwise; the paper does not clip)")
    harness.add_run_flags(p, RESUMABLE)
    harness.add_flags(p.add_argument_group("vae (§3.1, §4.3)"), VAEConfig)
    g = p.add_argument_group("generator (§3.2, §3.3, §4.4)")
    g.add_argument("--vae", help="trained VAE checkpoint, its frozen encoder gives the targets "
                   "(default: runs/vae/best.pt)")
    g.add_argument("--init", help="phase 2: the phase-1 checkpoint to start from "
                   "(default: runs/generator/best.pt)")
    g.add_argument("--bert", default=data.OFFLINE_BERT, help="text encoder, hub name or path "
                   f"(paper: a German BERT such as {data.PAPER_BERT})")
    harness.add_flags(g, G.GeneratorConfig)
    harness.add_flags(p.add_argument_group("backtranslation (§4.2)"), BackTranslatorConfig)
    args = p.parse_args(argv)
    kl = args.stage == "generator" and args.phase == 2
    chain = {"data_dir": DATA_DIR,                                      # the stages chain in runs/
             "out_dir": os.path.join("runs", "generator-kl" if kl else args.stage),
             "vae": os.path.join("runs", "vae", "best.pt") if args.stage == "generator" else None,
             "init": os.path.join("runs", "generator", "best.pt") if kl else None}
    defaults = {**STAGE_DEFAULTS[args.stage], **chain}
    harness.fill_defaults(p, args, defaults, announce, checkpoints=("vae", "init"))
    args.adam_betas = tuple(args.adam_betas)
    for name, low in (("epochs", 1), ("batch_size", 1), ("save_every", 0)):
        if getattr(args, name) < low:
            p.error(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    for cfg in (from_args(cls, args) for cls in CONFIGS):
        for problem in getattr(cfg, "problems", list)():
            p.error(problem)
    args.cache_dir = args.cache_dir or os.path.join(args.out_dir, "cache")
    return args


@dataclasses.dataclass
class Stage:
    """What the loop trains. loss(model, batch) -> (loss, {name: value}, count), where `count` is
    what the loss averages over (frames, tokens), so that the loop can weight each rank and a batch
    split over ranks equals the whole batch in one process."""
    model: torch.nn.Module
    train: torch.utils.data.Dataset
    dev: torch.utils.data.Dataset
    loss: Callable
    criterion: str = "loss"   # the dev log that selects best.pt, stops early, drives the plateau
    state: object = None      # more training state (state_dict / load_state_dict) for last.pt
    extra: dict = dataclasses.field(default_factory=dict)   # what inference needs from best.pt
    report: Callable = None   # report(model), after training, with best.pt's weights


def vae_stage(args, train, dev, device, distributed):
    cfg = from_args(VAEConfig, args)
    model = DisentangledVAE(**model_args(cfg))
    frames = torch.cat([s["poses_3d"] for s in train])                    # (ΣN, 178, 3)
    model.set_pose_stats(frames.mean(0), frames.std(0))

    def loss(m, batch):
        x, mask = batch["poses"], batch["frame_mask"]                      # (B, T, 178, 3), (B, T)
        x_hat, mu, logvar = m(x, sample=m.training)                      # dev: z = μ, as generated
        total, logs = vae_loss(x_hat, x, mu, logvar, mask, cfg.weights(), cfg.beta)   # Eq. (5)
        if not m.training:
            logs.update(selection_error(x_hat, x, mask, cfg.weights())[1])
        return total, logs, mask.sum()

    def report(m):
        x = torch.cat([s["poses_3d"] for s in dev]).to(device)            # (ΣN, 178, 3)
        log_against_mean_pose(m, x, frames.mean(0).to(device))

    return Stage(model, data.SignDataset(train), data.SignDataset(dev), loss, criterion="select",
                 extra={"model_args": model_args(cfg)}, report=report)


def generator_stage(args, train, dev, device, distributed):
    cfg = from_args(G.GeneratorConfig, args)
    vae = harness.load_for("--vae", args.vae, "vae", lambda ckpt: load_vae(ckpt, device))
    # Text embeddings and latent targets: computed once, by rank 0, and cached on disk.
    texts = [s["text"] for s in train + dev]
    emb = rank0_first(distributed, data.text_embeddings, texts, args.bert, args.cache_dir)
    layout = data.text_layout(texts, args.bert) if cfg.alignment != "none" else None
    lat = {**rank0_first(distributed, cached_latents, args.vae, train, args.cache_dir),
           **rank0_first(distributed, cached_latents, args.vae, dev, args.cache_dir)}
    cfg.max_frames = cfg.max_frames or max(len(s["poses_3d"]) for s in train)
    margs = model_args(cfg, text_dim=next(iter(emb.values())).shape[-1], max_frames=cfg.max_frames)
    model = G.A2VSLP(**margs)
    # §3.2: the stationary reference pose (hands resting down). Estimated as the per-coordinate
    # median of the first frame of every training sequence (signing starts from rest).
    model.set_reference_pose(torch.stack([s["poses_3d"][0] for s in train]).median(0).values)
    if cfg.phase == 2:   # continue phase 1's weights
        init = harness.load_for("--init", args.init, "generator", lambda ckpt: ckpt, margs)
        model.load_state_dict(init["model"])
    boost = None
    if cfg.hand_weights == "dynamic":
        boost = G.HandWeightBoost(cfg.hand_base, cfg.s_max, cfg.boost_alpha, cfg.boost_decay)
        if cfg.phase == 2:   # phase 2 continues phase 1's s(t) and EMAs
            harness.restore(boost, init, "stage_state", f"--init {args.init}")
    world = dist.get_world_size() if distributed else 1
    rank_mean = lambda t: all_reduce_sum(t, distributed) / world  # noqa: E731 (one s(t) everywhere)

    def loss(m, batch):
        total, logs, out = G.training_loss(m, batch, cfg, boost, rank_mean)        # §3.3
        if not m.training:   # dev (under no_grad): the decoded means against the poses, fixed λ
            logs.update(selection_error(vae.decode(out["mu"]), batch["poses"], batch["frame_mask"],
                                        PAPER_REC_WEIGHTS)[1])
        return total, logs, batch["frame_mask"].sum()

    extra = {"model_args": margs, "phase": cfg.phase, "bert": args.bert, "vae": vae.state_dict(),
             "max_tokens": data.MAX_TOKENS, "vae_model_args": {"variant": vae.variant}}
    train, dev = (data.SignDataset(split, emb, lat, layout) for split in (train, dev))
    return Stage(model, train, dev, loss, criterion="select", state=boost, extra=extra)


def backtranslation_stage(args, train, dev, device, distributed):
    cfg = from_args(BackTranslatorConfig, args)
    model = SignToText(build_vocab([s["text"] for s in train]), **model_args(cfg))
    step = cfg.subsample

    def loss(m, batch):
        poses, mask = batch["poses"][:, ::step], batch["frame_mask"][:, ::step]   # 12.5 fps (§4.2)
        total, stats = m(poses, mask, batch["texts"])
        return total, stats, torch.as_tensor(stats.pop("tokens"))

    def report(m):
        seqs, refs = [s["poses_3d"][::step] for s in dev], [s["text"] for s in dev]
        evaluate.log_greedy_scores(m, seqs, refs)

    return Stage(model, data.SignDataset(train), data.SignDataset(dev), loss, report=report,
                 extra={"model_args": model.config(), "subsample": step})


STAGES = {"vae": vae_stage, "generator": generator_stage, "backtranslation": backtranslation_stage}


# The loop

def run_epoch(model, loader, loss_fn, run, epoch, step, optimizer=None, first_batch=0):
    """One pass over `loader`; trains when optimizer is given. `run` holds args, device, distributed
    and ctx (the autocast context); training also uses run.stand_in, run.preempt and run.after_step
    (see train). first_batch: the global batches of this epoch done before a mid-epoch resume.
    Returns (mean logs, frames, step, skips)."""
    args, device, distributed = run.args, run.device, run.distributed
    world = dist.get_world_size() if distributed else 1
    sums, frames, skips, nonfinite = {}, 0, 0, []
    count_total = torch.zeros((), dtype=torch.float64, device=device)
    for done, batch in enumerate(loader, start=first_batch + 1):     # done: global batches after it
        stand_in = batch is None      # no sample of this rank in the epoch's last, small batch
        batch = run.stand_in if stand_in else batch
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in batch.items()}
        with run.ctx:
            loss, logs, count = loss_fn(model, batch)
        count = count.to(device=device, dtype=torch.float64) * (0.0 if stand_in else 1.0)
        finite = torch.isfinite(loss.detach()).to(device=device, dtype=torch.float64)
        if optimizer is not None:     # training: every rank takes every step (global batches)
            # one all-reduce per step: the global count, the ranks with a finite loss, the ranks
            # that caught a preemption signal (so that all stop after the same step)
            caught = torch.tensor(float(bool(run.preempt)), dtype=torch.float64, device=device)
            global_count, finite, stop = all_reduce_sum(torch.stack([count, finite, caught]),
                                                        distributed)
            # Weight this rank's mean by its share of the global count: a batch split over ranks
            # then gives exactly the gradient of the whole batch in one process (DDP averages).
            scale, stop = (count * world / global_count).float(), stop.item() > 0
        else:                         # dev: shards differ by one batch, so no collective per batch
            finite = finite * world
        if finite.item() < world:
            where = f"stage {args.stage}, epoch {epoch + 1}, step {step + 1}, " \
                f"samples {batch['names']}"
            if optimizer is None:     # raised below, on every rank at once
                nonfinite.append(f"{where}, dev loss {loss.item()}")
                continue
            if not args.skip_nonfinite:
                raise FloatingPointError(f"non-finite loss ({loss.item()}) at {where}; the "
                                         "last good checkpoint is kept (--skip-nonfinite: skip)")
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
            run.after_step(epoch, step, done, stop)
        for k, v in {"loss": loss, **logs}.items():
            v = torch.as_tensor(v, dtype=torch.float64, device=device).detach()
            sums[k] = sums.get(k, 0.0) + v * count
        count_total += count
        frames += 0 if stand_in else int(batch["frame_mask"].sum())
    sums.update({" count": count_total, " frames": torch.tensor(float(frames)),
                 " nonfinite": torch.tensor(float(len(nonfinite)))})
    sums = harness.sum_over_ranks(sums, device, distributed)     # ranks agree on the names first
    if sums.pop(" nonfinite") > 0:
        where = nonfinite[0] if nonfinite else "a dev batch of another rank"
        raise FloatingPointError(f"non-finite loss at {where}; the last good checkpoint is kept")
    count, frames = sums.pop(" count"), sums.pop(" frames")
    return {k: v / count for k, v in sums.items()}, int(frames), step, skips


def train(args, progress):
    rank, world, device = harness.setup_distributed()
    distributed, master = world > 1, rank == 0
    harness.setup_logging(master)
    preempt = cluster.catch_preemption()      # SIGTERM / SIGUSR1: finish the step, save, exit 75
    if args.batch_size % world:
        raise DataError(f"--batch-size {args.batch_size} must be divisible by the world size "
                        f"{world}")
    cluster.lock_out_dir(args.out_dir, distributed)       # one run per out dir (OUT_DIR/run.lock)
    last_path, best_path = (os.path.join(args.out_dir, f) for f in ("last.pt", "best.pt"))
    fill = ["--stage", args.stage, "--data-dir", ".", "--out-dir", ".", "--vae", ".", "--init", "."]
    ckpt = harness.check_out_dir(args, last_path, best_path, lambda saved: harness.changed_flags(
        args, saved, vars(get_args(fill, announce=False)), RESUMABLE, PATH_FLAGS))   # None: fresh
    if args.data_dir == DATA_DIR:
        rank0_first(distributed, corpus.write_default_corpus, DATA_DIR)
    ctx = harness.autocast(args.amp, device)
    torch.manual_seed(args.seed)                       # same initial weights on every rank
    paths = [os.path.join(args.data_dir, f"{split}.pt") for split in ("train", "dev")]
    train_set, dev_set = (data.load_split(path, args.skip_bad_samples) for path in paths)
    data.check_unique_names(dict(zip(paths, (train_set, dev_set))))
    stage = STAGES[args.stage](args, train_set, dev_set, device, distributed)
    model = stage.model.to(device)
    log.info("stage %s | world %d on %s | %d trainable parameters | %d train / %d dev samples",
             args.stage, world, device, sum(p.numel() for p in model.parameters()),
             len(stage.train), len(stage.dev))
    decay = args.weight_decay if args.stage == "generator" else 0.0
    optimizer = torch.optim.Adam(model.parameters(), args.lr, args.adam_betas, weight_decay=decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs) \
        if args.lr_decay == "cosine" else torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=args.plateau_factor, patience=args.plateau_patience) \
        if args.stage == "generator" else None
    checkpoints = harness.Checkpoints(
        args.out_dir, {"model": model, "optimizer": optimizer, "scheduler": scheduler,
                       "stage_state": stage.state},
        {"stage": args.stage, "args": vars(args), **stage.extra}, progress, rank, world)
    # what last.pt records of the loop; batch: the global batches of the next epoch already done
    state, rng = dict(epoch=0, batch=0, step=0, best_val=math.inf, val=None, bad_epochs=0), None
    if ckpt is not None:
        state, rng = checkpoints.resume(ckpt)
    os.makedirs(args.out_dir, exist_ok=True)
    if master:
        harness.open_log_file(args.out_dir)            # the run is accepted: log.txt from here on

    ddp = DDP(model, [device.index] if device.type == "cuda" else None) if distributed else model
    sampler = cluster.GlobalBatchSampler(len(stage.train), args.batch_size, rank, world, args.seed)
    # its own generator: making an iterator then draws nothing from the global one (noise streams)
    loader = DataLoader(stage.train, batch_sampler=sampler, collate_fn=cluster.collate_share,
                        num_workers=args.num_workers, generator=torch.Generator())
    dev_shard = torch.utils.data.Subset(stage.dev, cluster.dev_shard(len(stage.dev), rank, world))
    dev_loader = DataLoader(dev_shard, batch_size=args.batch_size // world, collate_fn=data.collate,
                            num_workers=args.num_workers)

    def after_step(epoch, step, done, stop):
        """last.pt every --save-every steps, and when the ranks agreed to stop (then Preempted)."""
        progress.step, last = step, done == sampler.batches_per_epoch()
        if stop or (args.save_every and step % args.save_every == 0 and not last):
            state.update(epoch=epoch, batch=done, step=step)
            checkpoints.save(state)
        if stop:
            cluster.preempted(preempt, epoch, step, done, sampler.batches_per_epoch(), last_path,
                              master)

    # stand_in: what a rank without a sample in a global batch runs, weighted 0
    run = argparse.Namespace(args=args, device=device, distributed=distributed, ctx=ctx,
                             preempt=preempt, stand_in=data.collate([stage.train[0]]),
                             after_step=after_step)
    t_start, first_batch = time.time(), state["batch"]
    for epoch in range(state["epoch"], args.epochs):
        progress.epoch = epoch + 1
        sampler.set_epoch(epoch, first_batch)
        torch.manual_seed(args.seed + 1_000_003 * (epoch + 1) + rank)   # resumable noise streams
        if first_batch and rng is not None:
            harness.set_rng_state(rng)
        ddp.train()
        t0 = time.time()
        train_logs, frames, step, skips = run_epoch(ddp, loader, stage.loss, run, epoch,
                                                    state["step"], optimizer, first_batch)
        dt = time.time() - t0
        ddp.eval()
        with torch.no_grad():
            dev_logs, _, _, _ = run_epoch(model, dev_loader, stage.loss, run, epoch, step)
        val = dev_logs[stage.criterion]                # a dev criterion whose meaning is fixed
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val)
        elif scheduler is not None:
            scheduler.step()
        improved = val < state["best_val"]
        state.update(epoch=epoch + 1, batch=0, step=step, val=val,
                     best_val=val if improved else state["best_val"],
                     bad_epochs=0 if improved else state["bad_epochs"] + 1)
        harness.log_epoch(epoch + 1, args.epochs, step, train_logs, dev_logs,
                          frames / max(dt, 1e-9), optimizer.param_groups[0]["lr"],
                          time.time() - t_start, improved, skips, first_batch)
        first_batch = 0
        harness.check_finite(model, f"stage {args.stage}, epoch {epoch + 1}", args.out_dir)
        checkpoints.save(state, improved)
        if args.patience and state["bad_epochs"] >= args.patience:
            log.info("early stopping: no better dev %s for %d epochs", stage.criterion,
                     args.patience)
            break
        caught = torch.tensor(float(bool(preempt)), device=device)   # during the dev pass or save
        if all_reduce_sum(caught, distributed).item() > 0 and epoch + 1 < args.epochs:
            cluster.preempted(preempt, epoch + 1, step, 0, sampler.batches_per_epoch(), last_path,
                              master)
    if master and stage.report is not None and os.path.exists(best_path):
        model.load_state_dict(harness.load_checkpoint(best_path, args.stage)["model"])
        stage.report(model)
    if distributed:
        del ddp               # its reducer holds the group: end_distributed then really ends it
        dist.barrier()
        cluster.end_distributed()


def main(argv=None):
    args, progress = get_args(argv), harness.Progress()
    cluster.run(lambda: train(args, progress), progress)   # errors: one line; preempted: exit 75


if __name__ == "__main__":
    main()
