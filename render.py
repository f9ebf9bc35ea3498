"""Pictures of pose sequences, ground truth beside the generation, as in the paper's Figure 2.

    python render.py --poses runs/demo/test_A2V-SLP.pt --data-dir runs/demo/data --split test \
        --name synthetic_test_000000 --out runs/demo/example     # example.png (strip) + example.gif

Bones are drawn per articulator in distinct colours (body, right hand, left hand, face). The view is
frontal (x, y); the vertical axis is oriented so that the shoulders are above the hips, whatever the
data's convention. matplotlib is optional: only this module needs it (`pip install matplotlib`).
"""
import argparse
import os
import sys

import numpy as np
import torch

import data
import harness

COLORS = {"body": "#4d4d4d", "right_hand": "#d62728", "left_hand": "#1f77b4", "face": "#2ca02c"}


def _plt():
    try:                        # matplotlib is optional (pictures only): imported where they are drawn
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        raise SystemExit("error: pictures need matplotlib (pip install matplotlib)") from None


def frontal(poses):
    """(N, 178, 3) → (N, 178, 2) frontal view with the head up (y flipped when shoulders are below hips)."""
    p = np.asarray(poses, dtype=np.float32)[..., :2].copy()
    shoulders, hips = p[:, [0, 3], 1].mean(), p[:, [6, 7], 1].mean()
    if shoulders < hips:
        p[..., 1] *= -1
    return p


def draw_pose(ax, pose2d, bones=None, lw=1.2):
    """Draw one frame (178, 2) on a matplotlib axis: one line collection per articulator."""
    from matplotlib.collections import LineCollection
    bones = bones or data.skeleton_bones()
    for part, pairs in bones.items():
        seg = np.array([[pose2d[a], pose2d[b]] for a, b in pairs])       # (E, 2, 2)
        ax.add_collection(LineCollection(seg, colors=COLORS[part], capstyle="round",
                                         linewidths=lw if part != "face" else lw * 0.6))
    ax.set_aspect("equal")
    ax.axis("off")


def _limits(*seqs):
    allp = np.concatenate([s.reshape(-1, 2) for s in seqs])
    lo, hi = allp.min(0), allp.max(0)
    pad = 0.05 * (hi - lo).max()
    return (lo[0] - pad, hi[0] + pad), (lo[1] - pad, hi[1] + pad)


def save_strip(rows, path, frames=8, title=None, sigma=None):
    """rows: {label: (N, 178, 3)}; one row per sequence, `frames` evenly spaced frames, as PNG.

    sigma, when given, is {articulator: (N,)}: the per-frame predicted σ̂ of the second row's sequence
    (the generation), drawn underneath as one curve per articulator, its shown frames marked."""
    plt = _plt()
    views = {k: frontal(v) for k, v in rows.items()}
    xl, yl = _limits(*views.values())
    fig = plt.figure(figsize=(1.6 * frames, 2.2 * len(views) + (1.8 if sigma else 0)))
    grid = fig.add_gridspec(len(views) + bool(sigma), frames, height_ratios=[2.2] * len(views) + ([1.8] if sigma else []))
    for r, (label, seq) in enumerate(views.items()):
        idx = np.linspace(0, len(seq) - 1, frames).round().astype(int)
        for c, t in enumerate(idx):
            ax = fig.add_subplot(grid[r, c])
            draw_pose(ax, seq[t])
            ax.set_xlim(*xl)
            ax.set_ylim(*yl)
            ax.set_title(f"{label} t={t}" if c == 0 else f"t={t}", fontsize=7)
    if sigma:
        ax = fig.add_subplot(grid[-1, :])
        for part, values in sigma.items():
            ax.plot(np.asarray(values), color=COLORS[part], lw=1.4, label=part.replace("_", " "))
        n = len(next(iter(sigma.values())))
        for t in np.linspace(0, n - 1, frames).round().astype(int):
            ax.axvline(t, color="#999999", lw=0.6, ls=":")
        ax.set_xlim(0, max(n - 1, 1))
        ax.set_xlabel(f"frame of '{list(views)[1]}'", fontsize=7)
        ax.set_ylabel("predicted σ̂ (mean over\nthe latent dims)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, ncol=4, loc="upper right", frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_gif(rows, path, fps=12.5, step=2):
    """rows: {label: (N, 178, 3)}, side by side, animated (every `step`-th frame) as GIF."""
    plt = _plt()
    from matplotlib.animation import FuncAnimation, PillowWriter      # optional, see _plt
    views = {k: frontal(v) for k, v in rows.items()}
    xl, yl = _limits(*views.values())
    n = max(len(v) for v in views.values())
    fig, axes = plt.subplots(1, len(views), figsize=(3 * len(views), 3.4), squeeze=False)

    def frame(t):
        for ax, (label, seq) in zip(axes[0], views.items()):
            ax.clear()
            draw_pose(ax, seq[min(t, len(seq) - 1)])
            ax.set_xlim(*xl)
            ax.set_ylim(*yl)
            ax.set_title(f"{label}  {min(t, len(seq) - 1)}/{len(seq)}", fontsize=8)
        return []

    anim = FuncAnimation(fig, frame, frames=range(0, n, step))
    anim.save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)


def render_example(gt, generated, out_prefix, text=None):
    """Write OUT_PREFIX.png (frame strip) and OUT_PREFIX.gif for ground truth vs generations."""
    rows = {"ground truth": gt, **generated}
    save_strip(rows, out_prefix + ".png", title=text)
    save_gif(rows, out_prefix + ".gif")
    return [out_prefix + ".png", out_prefix + ".gif"]


def save_hands(rows, path, frames=6, title=None):
    """rows: {label: (N, 178, 3)}; both hands enlarged (frontal view, each centred at its wrist) at
    `frames` evenly spaced frames, one row per sequence, as PNG: a loss of hand shape shows here."""
    plt = _plt()
    views = {k: frontal(v) for k, v in rows.items()}
    bones = data.skeleton_bones()
    hands = {"right_hand": 8, "left_hand": 29}
    n = min(len(v) for v in views.values())
    idx = np.linspace(0, n - 1, frames).round().astype(int)
    # one scale for every panel: the largest finger reach of any shown hand
    reach = max(np.abs(v[t, b + 1:b + 21] - v[t, b]).max() for v in views.values() for t in idx for b in hands.values())
    fig, axes = plt.subplots(len(views), 2 * frames, figsize=(1.5 * 2 * frames, 1.7 * len(views)), squeeze=False)
    for r, (label, seq) in enumerate(views.items()):
        for c, t in enumerate(idx):
            for h, (part, base) in enumerate(hands.items()):
                ax = axes[r, 2 * c + h]
                pts = seq[t] - seq[t, base]                                   # (178, 2), wrist at 0
                for a, b in bones[part][1:]:                                  # the hand's own bones
                    ax.plot(pts[[a, b], 0], pts[[a, b], 1], color=COLORS[part], lw=1.2)
                ax.set_xlim(-1.1 * reach, 1.1 * reach)
                ax.set_ylim(-1.1 * reach, 1.1 * reach)
                ax.set_aspect("equal")
                ax.axis("off")
                if h == 0:
                    ax.set_title(f"{label} t={t}" if c == 0 else f"t={t}", fontsize=6, loc="left")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_alignment(attention, tokens, poses, path, frames=8, title=None):
    """The decoder's cross-attention (N frames × L tokens) as a heat map over the frames, with the
    generated poses at `frames` evenly spaced frames underneath (marked on the map), as PNG."""
    plt = _plt()
    att = np.asarray(attention, dtype=np.float32)                            # (N, L)
    view = frontal(poses)
    idx = np.linspace(0, len(view) - 1, frames).round().astype(int)
    fig = plt.figure(figsize=(1.6 * frames, 2.2 + 0.16 * len(tokens)))
    grid = fig.add_gridspec(2, frames, height_ratios=[0.16 * len(tokens) + 0.6, 2.0])
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(att.T, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(tokens)))
    ax.set_yticklabels(tokens, fontsize=7)
    ax.set_xlabel("frame", fontsize=7)
    for t in idx:
        ax.axvline(t, color="white", lw=0.6, ls=":")
    ax.set_title(title or "cross-attention: which words each frame reads", fontsize=8)
    xl, yl = _limits(view)
    for c, t in enumerate(idx):
        a = fig.add_subplot(grid[1, c])
        draw_pose(a, view[t])
        a.set_xlim(*xl)
        a.set_ylim(*yl)
        a.set_title(f"t={t}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--poses", required=True, help="predictions {name: Tensor[N, 178, 3]} (sample.py output)")
    p.add_argument("--data-dir", required=True, help="release folder with the ground truth")
    p.add_argument("--split", default="test", help="split holding the sample")
    p.add_argument("--name", default=None, help="sample name (default: the first of the predictions)")
    p.add_argument("--out", required=True, help="output prefix: writes OUT.png and OUT.gif")
    args = p.parse_args(argv)
    try:
        preds = harness.safe_load(args.poses, what="predictions file")
        if not isinstance(preds, dict) or not preds:
            raise data.DataError(f"{args.poses}: expected a non-empty dict {{name: poses}}, got {type(preds).__name__}")
        samples = {s["name"]: s for s in data.load_split(os.path.join(args.data_dir, f"{args.split}.pt"))}
        name = args.name or next(iter(preds))
        if name not in preds or name not in samples:
            raise data.DataError(f"sample {name!r} is not in both {args.poses} and the {args.split} split")
        pred = preds[name]["poses_3d"] if isinstance(preds[name], dict) else preds[name]
        pred = torch.as_tensor(pred) if isinstance(pred, (torch.Tensor, np.ndarray)) else None
        if pred is None or pred.dim() != 3 or pred.shape[1:] != (data.NUM_JOINTS, 3) or len(pred) == 0:
            shape = tuple(pred.shape) if pred is not None else type(preds[name]).__name__
            raise data.DataError(f"{args.poses}: sample {name!r}: poses {shape}, expected (N, {data.NUM_JOINTS}, 3)")
        if not torch.isfinite(pred).all():
            raise data.DataError(f"{args.poses}: sample {name!r}: poses have non-finite values (NaN or inf)")
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        files = render_example(samples[name]["poses_3d"].numpy(), {"generated": pred.float().numpy()},
                               args.out, samples[name]["text"])
        print("wrote", ", ".join(files))
    except (data.DataError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
