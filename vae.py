"""Structurally disentangled VAE of A²V-SLP (§3.1 and §4.3, Eq. 1, 5, 6).

Each frame x_t (178 keypoints × 3) is split into body, right hand, left hand and face; each
articulator a has its own residual MLP encoder giving q(z_t^(a) | x_t) = N(μ_t^(a), σ_t^2(a))
(Eq. 1) with latent sizes 8 / 28 / 28 / 16 (80 in all), and its own symmetric decoder.

    python train.py --stage vae --data-dir runs/demo/data --out-dir runs/demo/vae
    torchrun --nproc_per_node=4 train.py --stage vae --data-dir DATA --out-dir runs/vae

After training, the frozen encoder gives the per-frame (μ, log σ²) targets of the generator (§4.4):
see `cached_latents`.
"""
import dataclasses
import hashlib
import logging
import os

import torch
import torch.nn as nn

from data import ARTICULATOR_ORDER, ARTICULATORS, NUM_JOINTS
from harness import DataError, atomic_save, hyper, load_checkpoint, safe_load

log = logging.getLogger("a2vslp")

LATENT_SIZES = {"body": 8, "right_hand": 28, "left_hand": 28, "face": 16}   # §3.1, 80 in all
LATENT_DIM = sum(LATENT_SIZES.values())
# Hidden sizes per articulator: "base" = twice the latent size (§3.1, PHOENIX); "csl" = the larger
# CSL-Daily encoders (§3.1: body 24, hands 84 → 56, face 48 → 32); "entangled" = one MLP over all
# 534 values (Table 1 ablation), hidden twice the 80-d latent.
HIDDEN_SIZES = {
    "base": {"body": (16,), "right_hand": (56,), "left_hand": (56,), "face": (32,)},
    "csl": {"body": (24,), "right_hand": (84, 56), "left_hand": (84, 56), "face": (48, 32)},
    "entangled": {"all": (160,)},
}
# §4.3 as printed: w_RH 10, w_LH 14, w_F 2, w_B 1 (Tables 4-5 use RH 14 / LH 10 for the generator).
PAPER_REC_WEIGHTS = {"body": 1.0, "right_hand": 10.0, "left_hand": 14.0, "face": 2.0}


@dataclasses.dataclass
class VAEConfig:
    """The VAE's hyperparameters: each field is a train.py flag (harness.add_flags), the model's
    fields are the checkpoint's model_args. Defaults are the paper's values where it gives them."""
    variant: str = hyper("base", "base: PHOENIX encoders; csl: the larger CSL-Daily encoders; entangled: "
                         "Table 1 ablation", flag="--vae-variant", choices=tuple(HIDDEN_SIZES), model=True,
                         label="{} VAE")
    beta: float = hyper(1e-3, "KL weight β of Eq. 5 (the paper: 1e-6 PHOENIX, 1e-7 CSL-Daily, for a "
                        "reconstruction loss whose normalisation it does not give; with this code's "
                        "per-coordinate mean L1, 1e-6 leaves σ at e^-7, so log σ², Eq. 4 and sampling carry "
                        "nothing; 1e-3 keeps σ informative, see docs/experiments.md)")
    w_rh: float = hyper(10.0, "w_RH of Eq. 6 (§4.3: 10)")
    w_lh: float = hyper(14.0, "w_LH of Eq. 6 (§4.3: 14)")
    w_face: float = hyper(2.0, "w_F of Eq. 6 (§4.3: 2)")
    w_body: float = hyper(1.0, "w_B of Eq. 6 (§4.3: 1)")

    def weights(self):
        """λ_a of Eq. 6."""
        return {"body": self.w_body, "right_hand": self.w_rh, "left_hand": self.w_lh, "face": self.w_face}


def split_articulators(x):
    """Split the last axis (80) into {articulator: (..., size)} views, ordered body, right hand, left
    hand, face, following LATENT_SIZES."""
    assert x.shape[-1] == LATENT_DIM, f"last dimension is {x.shape[-1]}, expected {LATENT_DIM}"
    return dict(zip(ARTICULATOR_ORDER, torch.split(x, [LATENT_SIZES[a] for a in ARTICULATOR_ORDER], dim=-1)))


class ResidualMLP(nn.Module):
    """Linear layers in → h_1 → … → h_k, then a residual layer h_k → h_k (x + f(x)).

    With one hidden size this is the paper's "2-layer residual linear encoder"; the activation is
    not specified in the paper (we use GELU).
    """

    def __init__(self, in_dim, hidden):
        super().__init__()
        dims = (in_dim,) + tuple(hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.residual = nn.Linear(dims[-1], dims[-1])
        self.act = nn.GELU()

    def forward(self, x):
        for layer in self.layers:
            x = self.act(layer(x))
        return x + self.act(self.residual(x))


class RegionEncoder(nn.Module):
    """x^(a) (..., J·3) → (μ^(a), log σ²^(a)), each (..., latent) — Eq. (1)."""

    def __init__(self, in_dim, hidden, latent):
        super().__init__()
        self.mlp = ResidualMLP(in_dim, hidden)
        self.mu = nn.Linear(hidden[-1], latent)
        self.logvar = nn.Linear(hidden[-1], latent)

    def forward(self, x):
        h = self.mlp(x)
        return self.mu(h), self.logvar(h)


class RegionDecoder(nn.Module):
    """z^(a) (..., latent) → x̂^(a) (..., J·3): the encoder's layers in reverse order."""

    def __init__(self, latent, hidden, out_dim):
        super().__init__()
        rev = tuple(reversed(hidden))
        self.mlp = ResidualMLP(latent, rev)
        self.out = nn.Linear(rev[-1], out_dim)

    def forward(self, z):
        return self.out(self.mlp(z))


class DisentangledVAE(nn.Module):
    """Articulator-wise VAE over single frames. variant: "base" | "csl" | "entangled"."""

    def __init__(self, variant="base"):
        super().__init__()
        assert variant in HIDDEN_SIZES, f"variant {variant!r}: choose one of {sorted(HIDDEN_SIZES)}"
        self.variant = variant
        hidden = HIDDEN_SIZES[variant]
        if variant == "entangled":
            self.regions = {"all": (slice(0, NUM_JOINTS), LATENT_DIM)}
        else:
            self.regions = {a: (ARTICULATORS[a], LATENT_SIZES[a]) for a in ARTICULATOR_ORDER}
        self.encoders = nn.ModuleDict({a: RegionEncoder((s.stop - s.start) * 3, hidden[a], n)
                                       for a, (s, n) in self.regions.items()})
        self.decoders = nn.ModuleDict({a: RegionDecoder(n, hidden[a], (s.stop - s.start) * 3)
                                       for a, (s, n) in self.regions.items()})
        # Per-coordinate standardisation of the input, set from training data (set_pose_stats).
        self.register_buffer("pose_mean", torch.zeros(NUM_JOINTS, 3))
        self.register_buffer("pose_std", torch.ones(NUM_JOINTS, 3))

    def set_pose_stats(self, mean, std):
        self.pose_mean.copy_(mean)
        self.pose_std.copy_(std.clamp_min(1e-6))

    def encode(self, x):
        """Poses (..., 178, 3) → μ, log σ², each (..., 80) ordered body, RH, LH, face (Eq. 1)."""
        x = (x - self.pose_mean) / self.pose_std                           # (..., 178, 3)
        mus, logvars = [], []
        for a, (s, _) in self.regions.items():
            mu, logvar = self.encoders[a](x[..., s, :].flatten(-2))        # (..., J·3) → (..., n)
            mus.append(mu)
            logvars.append(logvar)
        return torch.cat(mus, -1), torch.cat(logvars, -1)                  # (..., 80) each

    def decode(self, z):
        """Latents (..., 80) → poses (..., 178, 3)."""
        parts, start = [], 0
        for a, (s, n) in self.regions.items():
            xa = self.decoders[a](z[..., start:start + n])                 # (..., J·3)
            parts.append(xa.unflatten(-1, (s.stop - s.start, 3)))          # (..., J, 3)
            start += n
        x = torch.cat(parts, -2)                                           # (..., 178, 3)
        return x * self.pose_std + self.pose_mean

    @torch.no_grad()
    def reconstruct(self, x):
        """Poses (..., 178, 3) through the VAE with z = μ: the best any generator decoded by this
        VAE can do (the VAE row of evaluate.py)."""
        return self.decode(self.encode(x)[0])

    def forward(self, x, sample=True):
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar) if sample else mu
        return self.decode(z), mu, logvar


def reparameterize(mu, logvar):
    """z = μ + σ ⊙ ε, ε ~ N(0, I) (§3.1)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_standard_normal(mu, logvar, mask):
    """D_KL(q(z|x) ‖ N(0, I)) summed over the 80 latent dims, averaged over real frames.

    mu, logvar (B, T, 80); mask (B, T) bool, True at real frames.
    """
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)            # (B, T)
    return (kl * mask).sum() / mask.sum()


def reconstruction_loss(x_hat, x, mask, weights):
    """L_rec = w_RH L_RH + w_LH L_LH + w_F L_F + w_B L_B (Eq. 6).

    Each L_a is the L1 error of articulator a, averaged over its coordinates and the real frames
    (the norm is not specified in the paper; its ablations speak of L1 weights, so we use L1).
    x_hat, x (B, T, 178, 3); mask (B, T). Returns (L_rec, {articulator: L_a}).
    """
    n = mask.sum()
    per_frame_err = (x_hat - x).abs()                                      # (B, T, 178, 3)
    terms = {a: (per_frame_err[:, :, ARTICULATORS[a]].mean((-1, -2)) * mask).sum() / n
             for a in ARTICULATOR_ORDER}
    rec = (weights["right_hand"] * terms["right_hand"] + weights["left_hand"] * terms["left_hand"]
           + weights["face"] * terms["face"] + weights["body"] * terms["body"])   # Eq. (6)
    return rec, terms


def hand_shape_error(x_hat, x, mask):
    """{hand: L1 error of the 20 finger joints relative to their wrist}, averaged over real frames.

    The hand's shape, independent of where the arm puts it: what a reader of the fingers (and the
    back-translator) depends on, and what an absolute-position error hides behind the wrist's error.
    x_hat, x (B, T, 178, 3); mask (B, T).
    """
    out = {}
    for a in ("right_hand", "left_hand"):
        s = ARTICULATORS[a]
        rel = lambda p: p[:, :, s.start + 1:s.stop] - p[:, :, s.start:s.start + 1]   # (B, T, 20, 3)  # noqa: E731
        err = (rel(x_hat) - rel(x)).abs().mean((-1, -2))                               # (B, T)
        out[a] = (err * mask).sum() / mask.sum()
    return out


def selection_error(x_hat, x, mask, weights):
    """The dev criterion that picks best.pt (not in the paper; its meaning never changes in a run):
    Eq. 6 with fixed weights plus the same hand weights on the wrist-relative hand-shape error.
    Returns (value, logs)."""
    rec, _ = reconstruction_loss(x_hat, x, mask, weights)
    shape = hand_shape_error(x_hat, x, mask)
    value = rec + weights["right_hand"] * shape["right_hand"] + weights["left_hand"] * shape["left_hand"]
    return value, {"select": value, "shape_RH": shape["right_hand"], "shape_LH": shape["left_hand"]}


def vae_loss(x_hat, x, mu, logvar, mask, weights, beta):
    """L = L_rec + β D_KL (Eq. 5). Returns (L, logs) with every term for logging."""
    rec, terms = reconstruction_loss(x_hat, x, mask, weights)
    kl = kl_standard_normal(mu, logvar, mask)
    loss = rec + beta * kl                                                 # Eq. (5)
    return loss, {"rec": rec, "kl": kl, **{f"L_{a}": t for a, t in terms.items()}}


@torch.no_grad()
def log_against_mean_pose(model, x, mean_pose):
    """Log the L1 per articulator and the wrist-relative hand-shape error of the VAE (z = μ) on the
    frames x (N, 178, 3), beside those of predicting `mean_pose` (178, 3) for every frame."""
    x_hat, mean_pose = model.eval().reconstruct(x), mean_pose.expand_as(x)
    for a in ARTICULATOR_ORDER:
        err, base = ((y - x)[:, ARTICULATORS[a]].abs().mean().item() for y in (x_hat, mean_pose))
        log.info("dev L1 %-10s VAE %.5f  mean pose %.5f  (%.1fx lower)", a, err, base, base / max(err, 1e-12))
    ones = torch.ones(1, len(x), dtype=torch.bool, device=x.device)
    shape, base = hand_shape_error(x_hat[None], x[None], ones), hand_shape_error(mean_pose[None], x[None], ones)
    for a in shape:
        log.info("dev hand shape %-10s VAE %.5f  mean pose %.5f  (%.1fx lower; finger joints relative "
                 "to the wrist)", a, shape[a], base[a], base[a] / max(float(shape[a]), 1e-12))


# ---------------------------------------------------------------------------------------------
# The frozen encoder as the generator's supervision (§4.4)
# ---------------------------------------------------------------------------------------------

def load_vae(path, map_location="cpu"):
    """Rebuild a DisentangledVAE from a `--stage vae` checkpoint (a path or its dict), or from the
    copy a generator checkpoint carries."""
    ckpt = load_checkpoint(path, "vae", "generator") if isinstance(path, (str, os.PathLike)) else path
    generator = ckpt["stage"] == "generator"
    vae = DisentangledVAE(**ckpt["vae_model_args" if generator else "model_args"])
    state = ckpt["vae" if generator else "model"]
    vae.load_state_dict(state)
    return vae.eval().to(map_location)


@torch.no_grad()
def extract_latents(vae, samples, batch_frames=8192):
    """{name: (N, 160) float32 = [μ ‖ log σ²]} for every sample, from the frozen encoder."""
    vae.eval()
    device = vae.pose_mean.device
    out = {}
    for s in samples:
        poses = s["poses_3d"]
        chunks = [torch.cat(vae.encode(p.to(device)), -1).cpu() for p in poses.split(batch_frames)]
        out[s["name"]] = torch.cat(chunks)                                  # (N, 160)
    return out


def cached_latents(vae_path, samples, cache_dir):
    """extract_latents, computed once and cached in cache_dir under a hash of the VAE file's bytes
    and of the samples (names and poses): a changed VAE or data set never reads a stale cache, and a
    damaged one (unreadable, a sample missing, misshapen or non-finite) is recomputed with a warning."""
    h = hashlib.sha1()
    with open(vae_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    for s in samples:
        h.update(s["name"].encode("utf-8", "surrogatepass") + b"\0")
        h.update(s["poses_3d"].contiguous().numpy().tobytes())
    cache = os.path.join(cache_dir, f"latents_{h.hexdigest()[:16]}.pt")
    if os.path.exists(cache):                           # a derived file: recomputed when damaged, never trusted
        try:
            latents = safe_load(cache, what="latent cache")
            problem = None if isinstance(latents, dict) else f"a {type(latents).__name__}, not a dict"
            for s in samples if problem is None else []:
                z = latents.get(s["name"])
                if not torch.is_tensor(z) or z.shape != (len(s["poses_3d"]), 2 * LATENT_DIM) or not torch.isfinite(z).all():
                    problem = f"sample {s['name']!r}: missing, not ({len(s['poses_3d'])}, {2 * LATENT_DIM}) or non-finite"
                    break
        except DataError as e:
            problem = str(e).removeprefix(f"{cache}: ")
        if problem is None:
            return latents
        log.warning("%s: %s; recomputing it", cache, problem)
    latents = extract_latents(load_vae(vae_path), samples)
    os.makedirs(cache_dir, exist_ok=True)
    atomic_save(latents, cache)
    return latents
