r"""The A²V-SLP generator: text embeddings → articulator-wise latent means and log-variances.

Implements §3.2 (non-autoregressive Transformer with gloss attention in the decoder, Eq. 2),
§3.3 (two-phase training: masked latent L1, Eq. 3, then the KL term, Eq. 4) and §4.4.3 (dynamic
hand weighting, Eq. 7–8). The frozen VAE of §3.1 (vae.py) provides the targets (μ, log σ²) and
decodes sampled latents into poses.

    python train.py --stage generator --phase 1 --vae runs/demo/vae/best.pt \
        --data-dir runs/demo/data --out-dir runs/demo/gen1
    python train.py --stage generator --phase 2 --init runs/demo/gen1/best.pt \
        --vae runs/demo/vae/best.pt --data-dir runs/demo/data --out-dir runs/demo/gen2
    python sample.py --generator runs/demo/gen2/best.pt --data-dir runs/demo/data ...

Where the paper is silent, the choices follow the authors' earlier code (DARSLP, Tasyurek et al. 2025)
or are stated on the line that makes them. Masks are bool and True at real positions.
"""
import dataclasses
import math

import torch
import torch.nn as nn

from data import ARTICULATOR_ORDER, CHAR_BUCKETS, NUM_JOINTS
from gloss_attention import FUSIONS, QUERY_TYPES, GlossAttention
from harness import hyper
from vae import split_articulators

# "absolute": the projected reference pose + PE(t), as in the paper and DARSLP;
# "progress": + PE(t / (N - 1) · max_frames) as well, so every query also knows how far through its
# own sequence it is (the counter of Progressive Transformers, Saunders et al. 2020); not in the paper.
TIME_QUERIES = ("progress", "absolute")
# Alignment (not in the paper): the text is laid out on an axis of units, one per character of
# each token (the spaces before it included; one for [CLS] and [SEP]) or one per token ("tokens"),
# and every unit lasts some frames. Frame t then knows which token it signs and how far into it,
# which the aligned queries add to its time query, and the cross-attention is guided toward that
# token (guided_attention_loss). Durations come from
#   "mas":    monotonic alignment search (Glow-TTS, Kim et al. 2020) of the target latents against
#             a learned anchor per unit during training; a duration predictor at inference;
#   "chars"/"tokens": a constant rate, every unit the same share of the frames;
#   "none":   the paper's decoder, which must find the alignment alone.
ALIGNMENTS = ("mas", "chars", "tokens", "none")


def _float_or_none(text):
    return None if text.lower() == "none" else float(text)


@dataclasses.dataclass
class GeneratorConfig:
    """The generator's hyperparameters (§3.2, §3.3, §4.4): each field is a train.py flag
    (harness.add_flags); the model fields are the checkpoint's model_args; a value other than the
    default shows in evaluate.py's row name as its label. Defaults are the paper's values where it
    gives them; "not in the paper" marks this code's additions, each measured in docs/experiments.md."""
    # the model (§3.2)
    d_model: int = hyper(512, "model width (§3.2: 512)", model=True, label=False)
    enc_layers: int = hyper(3, "text encoder layers (§3.2: 3)", model=True, label=False)
    enc_heads: int = hyper(4, "text encoder heads (§3.2: 4)", model=True, label=False)
    dec_layers: int = hyper(6, "decoder layers (§3.2: 6)", model=True, label=False)
    dec_heads: int = hyper(8, "decoder heads (§3.2: 8)", model=True, label=False)
    ff: int = hyper(1024, "feed-forward width (§3.2: 1024)", model=True, label=False)
    dropout: float = hyper(0.1, "dropout (not given in the paper)", model=True, label=False)
    window: int = hyper(3, "gloss attention window N (Table 3 best: 3)", model=True, label="N={}")
    query: str = hyper("none", "query construction (Table 4)", choices=QUERY_TYPES, model=True,
                       label=lambda v, c: f"{v} query q={c.query_span}")
    query_span: int = hyper(3, "query aggregation span q (Table 4)", model=True, label=False)
    fusion: str = hyper("local", "decoder self-attention: local gloss attention, global (Table 2 "
                        "baseline) or both", choices=FUSIONS, model=True, label="{} attention")
    max_frames: int = hyper(None, "length normalisation (default: the longest training sequence)",
                            type=int, label=False)
    time_queries: str = hyper("progress", "decoder queries: absolute = reference pose + PE(t), the "
                              "paper's; progress = + PE of t / (N - 1), so frames know the sentence's "
                              "length (not in the paper)", choices=TIME_QUERIES, model=True,
                              label="{} time queries")
    alignment: str = hyper("mas", "where in the text each frame is (not in the paper): mas = monotonic "
                           "alignment search against learned anchors per character, a duration "
                           "predictor at inference; chars / tokens = a constant rate of characters / "
                           "subword tokens per frame; none = the paper's decoder", choices=ALIGNMENTS,
                           model=True, label=lambda v, c: "the paper's decoder, no alignment"
                           if v == "none" else f"{v} alignment")
    char_embedding: bool = hyper(True, "add an embedding of the character under each frame to its time "
                                 "query (not in the paper; off with --alignment none)", model=True,
                                 label=lambda v, c: None if c.alignment == "none" else "no character embedding")
    # the objective (§3.3, §4.4)
    phase: int = hyper(1, "1: L1 on (μ, log σ²); 2: + KL (Eq. 4)", choices=(1, 2), label=False)
    hand_weights: str = hyper("dynamic", "dynamic: Eq. 7-8 boost (Table 5 best); fixed: --fixed-weights",
                              choices=("dynamic", "fixed"), label="{} hand weights")
    hand_base: tuple = hyper((3.5, 2.5), "(b_RH, b_LH) of Eq. 7 (Table 5: 3.5 2.5)",
                             label=lambda v, c: None if c.hand_weights == "fixed" else f"b = {v[0]}, {v[1]}")
    s_max: float = hyper(4.0, "s_max of Eq. 8 (Table 5: 4)",
                         label=lambda v, c: None if c.hand_weights == "fixed" else f"s_max {v}")
    boost_alpha: float = hyper(0.01, "α of Eq. 8 (not given in the paper: a steady 1.5x hand/other "
                               "ratio lifts s from 1 to 4 in ~340 steps)")
    boost_decay: float = hyper(0.99, "EMA decay of Eq. 8 (not given in the paper: ~100 batches)")
    fixed_weights: tuple = hyper((14.0, 10.0, 2.0), "fixed λ for (RH, LH, face), body 1 (§4.4.2: 14 10 2)",
                                 label=lambda v, c: None if c.hand_weights == "dynamic" else f"λ = {v}")
    kl_weight: float = hyper(1e-3, "phase 2 weight of Eq. 4 (not given in the paper; with the default "
                             "VAE the KL is ~150x the L1 of Eq. 3 after phase 1: 1e-3 makes it ~15 %% of "
                             "the loss; 3e-3 measured no better, see docs/experiments.md)", label=False)
    logvar_floor: float = hyper(-8.0, "Eq. 3 and Eq. 4 clamp predicted and target log σ² from below at "
                                "this value (not in the paper: a β = 1e-6 VAE gives log σ² of -16 ± 9, "
                                "values that all decode to the same pose, and the exact KL to them is "
                                "~1e20; below -8 sampling moves the demo VAE's poses by < 0.1x its own "
                                "reconstruction error); none: the paper's literal Eq. 3 and 4",
                                type=_float_or_none, label="log-variance floor {}")
    logvar_weight: float = hyper(1.0, "weight γ of the log σ² term of Eq. 3 (the paper: 1)",
                                 label="log-variance weight {}")
    length_weight: float = hyper(1.0, "weight of the length L1 loss")
    guide_weight: float = hyper(1.0, "weight of the guided-attention loss on the cross-attention (not in "
                                "the paper; 0 with --alignment none)",
                                label=lambda v, c: None if c.alignment == "none" else f"guide weight {v}")
    guide_width: float = hyper(0.1, "width g of the guided-attention penalty, in units of the text length")
    # the optimiser (§4.4)
    weight_decay: float = hyper(1e-4, "Adam weight decay (§4.4: 1e-4)")
    plateau_factor: float = hyper(0.9, "ReduceLROnPlateau factor (§4.4: 0.9)")
    plateau_patience: int = hyper(40, "ReduceLROnPlateau patience (§4.4: 40)")

    def __post_init__(self):
        if self.alignment == "none":   # no character under a frame, nothing to guide toward
            self.char_embedding, self.guide_weight = False, 0.0

    def problems(self):
        """What is wrong with the values, as messages naming the flag (train.py's argparse reports them)."""
        checks = [("--window", self.window >= 1 and self.window % 2 == 1, "an odd positive number"),
                  ("--query-span", self.query_span >= 1, ">= 1"),
                  ("--max-frames", self.max_frames is None or self.max_frames >= 1, ">= 1"),
                  ("--hand-base", all(b > 0 for b in self.hand_base), "two weights > 0"),   # Eq. 7
                  ("--s-max", self.s_max >= 1, ">= 1"), ("--boost-alpha", self.boost_alpha >= 0, ">= 0"),
                  ("--boost-decay", 0 <= self.boost_decay < 1, "in [0, 1)")]                 # Eq. 8
        return [f"{flag} must be {need}, got {getattr(self, flag[2:].replace('-', '_'))}"
                for flag, ok, need in checks if not ok]

    def loss_weights(self):
        """λ_a of Eq. 3 with fixed hand weights (§4.4.2); the dynamic ones come from HandWeightBoost."""
        rh, lh, face = self.fixed_weights
        return {"body": 1.0, "right_hand": rh, "left_hand": lh, "face": face}


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def sinusoidal_encoding(positions, dim, device=None, dtype=torch.float32):
    """PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(p / 10000^(2i/dim)).

    positions: an int L (positions 0..L-1, result (L, dim)) or a float tensor of any shape
    (real-valued positions, result (*shape, dim)).
    """
    if isinstance(positions, int):
        positions = torch.arange(positions, device=device)
    position = positions.to(device=device, dtype=torch.float32)[..., None]             # (..., 1)
    exponent = torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim  # (ceil(dim/2),)
    angle = position * torch.exp(-math.log(10000.0) * exponent)  # (..., ceil(dim/2))
    pe = torch.zeros(angle.shape[:-1] + (dim,), device=device, dtype=torch.float32)  # (..., dim)
    pe[..., 0::2] = torch.sin(angle)
    pe[..., 1::2] = torch.cos(angle)[..., : dim // 2]
    return pe.to(dtype)


def masked_mean(x, mask):
    """Mean of x (B, L, D) over the positions where mask (B, L) is True; (B, D)."""
    weight = mask.to(x.dtype)[..., None]                                              # (B, L, 1)
    return (x * weight).sum(1) / weight.sum(1).clamp_min(1.0)                         # (B, D)


def lengths_to_mask(lengths, max_len=None):
    """Frame mask (B, T) bool, True at the first lengths[b] positions of row b."""
    lengths = torch.as_tensor(lengths)
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]   # (B, T)


# ---------------------------------------------------------------------------------------------
# Model (§3.2)
# ---------------------------------------------------------------------------------------------

class DecoderLayer(nn.Module):
    """Gloss self-attention over frames → global cross-attention to the text → FFN.

    Pre-norm residual blocks (not specified in the paper): the paper's schedule has no warm-up,
    and pre-norm Transformers train stably without one.
    """

    def __init__(self, d_model, heads, ff, dropout, window, query, query_span, fusion):
        super().__init__()
        self.self_attn = GlossAttention(d_model, heads, window=window, query=query, query_span=query_span,
                                        fusion=fusion, dropout=dropout)
        self.cross_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_model, ff), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(ff, d_model))
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, frame_mask, memory, text_mask, attention=None):
        # Local temporal self-attention over real frames (its dropout is inside GlossAttention).
        x = x + self.self_attn(self.norm1(x), frame_mask)                             # (B, T, D)
        h = self.norm2(x)
        # Cross-attention to the text stays global (§3.2); `attention` collects its weights.
        h, w = self.cross_attn(h, memory, memory, key_padding_mask=~text_mask,
                               need_weights=attention is not None)                    # w (B, T, L)
        if attention is not None:
            attention.append(w)
        x = x + self.dropout(h)                                                       # (B, T, D)
        x = x + self.dropout(self.ffn(self.norm3(x)))                                 # (B, T, D)
        return x.masked_fill(~frame_mask[..., None], 0.0)  # padded frames stay exactly 0


class A2VSLP(nn.Module):
    """Text encoder + length predictor + non-autoregressive gloss-attention decoder (§3.2).

    All constructor arguments are plain values (kept in `self.config`), so a checkpoint rebuilds
    the model with `A2VSLP(**config)` and restores the reference pose with the state_dict.
    Defaults are the paper's values; `max_frames` = 300 follows DARSLP.
    """

    def __init__(self, text_dim, d_model=512, enc_layers=3, enc_heads=4, dec_layers=6, dec_heads=8,
                 ff=1024, dropout=0.1, max_frames=300, window=3, query="none", query_span=3, fusion="local",
                 latent_dim=80, time_queries="progress", alignment="mas", char_embedding=True):
        super().__init__()
        assert d_model % enc_heads == 0 and d_model % dec_heads == 0, "d_model must be divisible by the heads"
        assert 0.0 <= dropout < 1.0 and time_queries in TIME_QUERIES, (dropout, time_queries)
        assert alignment in ALIGNMENTS and not (char_embedding and alignment == "none"), alignment
        self.config = dict(text_dim=text_dim, d_model=d_model, enc_layers=enc_layers,
                           enc_heads=enc_heads, dec_layers=dec_layers, dec_heads=dec_heads, ff=ff,
                           dropout=dropout, max_frames=max_frames, window=window, query=query,
                           query_span=query_span, fusion=fusion, latent_dim=latent_dim, time_queries=time_queries,
                           alignment=alignment, char_embedding=char_embedding)
        self.text_dim, self.d_model = text_dim, d_model
        self.time_query_kind = time_queries
        self.max_frames, self.latent_dim = max_frames, latent_dim
        self.alignment, self.aligned_queries = alignment, alignment != "none"

        # Text encoder: BERT embeddings → 512 → + PE → 3 layers, 4 heads, FFN 1024 (§3.2).
        self.text_proj = nn.Linear(text_dim, d_model)
        # Pre-norm like the decoder (not specified in the paper); ReLU FFN (PyTorch's default).
        layer = nn.TransformerEncoderLayer(d_model, enc_heads, ff, dropout, batch_first=True,
                                           norm_first=True)
        self.text_encoder = nn.TransformerEncoder(layer, enc_layers, norm=nn.LayerNorm(d_model),
                                                  enable_nested_tensor=False)
        # Length predictor on the mean-pooled encoder output (as in DARSLP).
        self.length_head = nn.Linear(d_model, 1)

        # Time queries from the stationary reference pose (§3.2); the pose is set by the caller.
        self.register_buffer("reference_pose", torch.zeros(NUM_JOINTS, 3))
        self.register_buffer("reference_pose_set", torch.tensor(False))
        self.query_proj = nn.Linear(NUM_JOINTS * 3, d_model)
        # Aligned queries: the projected encoder state of the token under each frame (not in the paper);
        # with "mas" also an anchor latent and a log-duration per unit of text.
        self.align_proj = nn.Linear(d_model, d_model) if self.aligned_queries else None
        # The character under each unit (not in the paper): in fingerspelling it is the sign itself,
        # which subword states (one for "berlin") carry only implicitly.
        self.char_embedding = nn.Embedding(CHAR_BUCKETS, d_model) if char_embedding else None
        self.anchor_head = nn.Linear(d_model, latent_dim) if alignment == "mas" else None
        self.duration_head = nn.Linear(d_model, 1) if alignment == "mas" else None

        # Non-autoregressive decoder: 6 layers, 8 heads, FFN 1024, gloss self-attention (§3.2).
        self.decoder_layers = nn.ModuleList([
            DecoderLayer(d_model, dec_heads, ff, dropout, window, query, query_span, fusion)
            for _ in range(dec_layers)])
        self.decoder_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 2 * latent_dim)

    @torch.no_grad()
    def set_reference_pose(self, pose):
        """Store the stationary reference pose (178, 3) (any float dtype, tensor or array)."""
        pose = torch.as_tensor(pose, dtype=torch.float32)
        assert pose.numel() == NUM_JOINTS * 3, f"expected {NUM_JOINTS}x3 values, got shape {tuple(pose.shape)}"
        assert bool(torch.isfinite(pose).all()), "the reference pose contains NaN or inf"
        self.reference_pose.copy_(pose.reshape(NUM_JOINTS, 3))
        self.reference_pose_set.fill_(True)

    def encode_text(self, text_emb, text_mask):
        """Contextual token states (B, L, D) from BERT embeddings (B, L, text_dim)."""
        L = text_emb.shape[1]
        x = self.text_proj(text_emb)                                                  # (B, L, D)
        x = x + sinusoidal_encoding(L, self.d_model, x.device, x.dtype)                # (B, L, D)
        return self.text_encoder(x, src_key_padding_mask=~text_mask)                  # (B, L, D)

    def length_ratio(self, memory, text_mask):
        """Normalised target length in (0, 1): sigmoid(Linear(masked mean pool)); (B,)."""
        pooled = masked_mean(memory, text_mask)                                       # (B, D)
        return torch.sigmoid(self.length_head(pooled)).squeeze(-1)                    # (B,)

    def time_queries(self, frame_mask):
        """The projected reference pose replicated over the frames, plus PE; (B, T, D).

        With time_queries="progress" each query also gets PE at its normalised progress
        t / (N_b - 1) · max_frames, so a frame knows where it lies within its sentence of N_b frames
        (with absolute PE alone, frames 0..49 cannot tell a 60-frame from a 200-frame sentence).
        """
        assert bool(self.reference_pose_set), "the reference pose is unset: call set_reference_pose(pose)"
        B, T = frame_mask.shape
        ref = self.query_proj(self.reference_pose.reshape(1, 1, NUM_JOINTS * 3))      # (1, 1, D)
        x = ref + sinusoidal_encoding(T, self.d_model, ref.device, ref.dtype)         # (1, T, D)
        if self.time_query_kind == "progress":
            last = (frame_mask.sum(1, keepdim=True) - 1).clamp_min(1)                 # (B, 1)
            t = torch.arange(T, device=ref.device)[None, :]                            # (1, T)
            progress = t.float() / last * self.max_frames                             # (B, T)
            x = x + sinusoidal_encoding(progress, self.d_model, ref.device, ref.dtype)  # (B, T, D)
        return x.expand(B, T, self.d_model)                                           # (B, T, D)

    def text_units(self, spans, text_mask):
        """Units of text per token (B, L) and each token's interval [S, E) on the unit axis (B, L, 2).

        spans (B, L, 2): [start, end) of each token in characters (data.text_layout); a token has
        max(characters, 1) units ([CLS] and [SEP] one), or 1 each with alignment "tokens".
        """
        if self.alignment == "tokens":
            units = text_mask.float()                                                   # (B, L)
        else:
            units = torch.where(text_mask, (spans[..., 1] - spans[..., 0]).clamp_min(1.0), 0.0)  # (B, L)
        end = units.cumsum(1)                                                           # (B, L)
        return units, torch.stack([end - units, end], -1)                               # (B, L, 2)

    def text_features(self, memory, intervals, text_mask, q, chars):
        """At text positions q (B, X) on the unit axis: the projected state of the token that holds
        q, plus PE(4 × (q − its start)), i.e. how many characters into the token, plus the embedding
        of the character at q (chars (B, U), data.text_layout) when the model has one; (B, X, D)."""
        start, end = intervals[..., 0][:, None], intervals[..., 1][:, None]             # (B, 1, L)
        inside = ((start <= q[..., None]) & (q[..., None] < end) & text_mask[:, None]).to(memory.dtype)
        token = self.align_proj(inside @ memory)                                        # (B, X, D)
        offset = (inside * (q[..., None] - start)).sum(-1)                              # (B, X)
        x = token + sinusoidal_encoding(4.0 * offset, self.d_model, memory.device, memory.dtype)
        if self.char_embedding is not None:
            unit = q.long().clamp(0, chars.shape[1] - 1)                                # (B, X)
            x = x + self.char_embedding(chars.gather(1, unit))                          # (B, X, D)
        return x

    def unit_features(self, memory, intervals, text_mask, chars):
        """text_features at the centre of every unit (B, U, D), U = the most units of a sample."""
        U = int(intervals[..., 1].amax().round())
        centres = torch.arange(U, device=memory.device, dtype=memory.dtype)[None] + 0.5   # (1, U)
        return self.text_features(memory, intervals, text_mask, centres.expand(memory.shape[0], U), chars)

    def durations(self, memory, text_mask, layout, frame_mask, target_mu=None):
        """Frames per unit of text (B, U), summing to each sample's frame count, the tokens' intervals
        on the unit axis (B, L, 2), and with "mas" the alignment losses: the anchors' squared error
        along the alignment and the log-duration L1. layout: (spans (B, L, 2), chars (B, U)).

        "mas" with target_mu (B, T, 80): the monotonic alignment of the target latents to the units'
        anchors; without: the duration predictor, rescaled to the frames. Else a constant rate.
        """
        spans, chars = layout
        units, intervals = self.text_units(spans, text_mask)
        n_units = units.sum(1)                                                          # (B,)
        U = int(n_units.max().round())
        unit_mask = lengths_to_mask(n_units.round().long(), U)                          # (B, U)
        frames = frame_mask.sum(1).to(units.dtype)                                      # (B,)
        losses = {}
        if self.alignment != "mas":
            return unit_mask * (frames / n_units)[:, None], intervals, losses           # (B, U)
        feats = self.unit_features(memory, intervals, text_mask, chars)                 # (B, U, D)
        log_d = self.duration_head(feats.detach()).squeeze(-1)                          # (B, U)
        if target_mu is None:
            d = torch.exp(log_d).masked_fill(~unit_mask, 0.0)                           # (B, U)
            return d * (frames / d.sum(1).clamp_min(1e-6))[:, None], intervals, losses
        anchors = self.anchor_head(feats)                                               # (B, U, 80)
        # mean squared distance of every target frame to every anchor, ‖x‖² + ‖a‖² − 2 x·a   # (B, T, U)
        cost = ((target_mu ** 2).sum(-1)[..., None] + (anchors ** 2).sum(-1)[:, None]
                - 2 * target_mu @ anchors.transpose(1, 2)).clamp_min(0.0) / anchors.shape[-1]
        d = monotonic_alignment(cost.detach() + alignment_prior_cost(frame_mask, unit_mask),
                                frame_mask, unit_mask)                                  # (B, U)
        unit_of_frame = torch.searchsorted(d.cumsum(1), torch.arange(cost.shape[1], device=d.device,
                                           dtype=d.dtype)[None].expand(len(d), -1).contiguous(), right=True)
        along = cost.gather(2, unit_of_frame.clamp(max=U - 1)[..., None]).squeeze(-1)    # (B, T)
        losses["anchor"] = along[frame_mask].mean()
        losses["duration"] = (log_d - torch.log(d.clamp_min(1.0)))[unit_mask].abs().mean()
        return d, intervals, losses

    def decode(self, memory, text_mask, frame_mask, positions=None, return_attention=False):
        """One non-autoregressive pass: μ̂ and log σ̂², each (B, T, latent_dim).

        positions: (q (B, T), intervals (B, L, 2), chars (B, U)), every frame's place on the text's
        unit axis (frame_positions), the tokens' intervals and the characters on it (aligned queries).
        return_attention=True also returns the cross-attention weights (layers, B, T, L), averaged
        over the heads: which words each frame reads.
        """
        x = self.time_queries(frame_mask)                                             # (B, T, D)
        if self.aligned_queries:
            x = x + self.text_features(memory, positions[1], text_mask, positions[0], positions[2])  # (B, T, D)
        attention = []
        for layer in self.decoder_layers:
            x = layer(x, frame_mask, memory, text_mask, attention if return_attention else None)
        z_hat = self.head(self.decoder_norm(x))                                       # (B, T, 2*80)
        z_hat = z_hat.masked_fill(~frame_mask[..., None], 0.0)
        # ẑ_t = [μ̂_t ‖ log σ̂²_t], split into the two halves (each (B, T, 80)).
        mu_hat, logvar_hat = z_hat.chunk(2, dim=-1)  # Eq. (2)
        if return_attention:
            return mu_hat, logvar_hat, torch.stack(attention)                         # (layers, B, T, L)
        return mu_hat, logvar_hat

    def _check(self, text_emb, text_mask):
        assert text_emb.dim() == 3 and text_emb.shape[-1] == self.text_dim, f"text_emb must be (B, L, {self.text_dim})"
        assert text_mask.dtype == torch.bool and text_mask.shape == text_emb.shape[:2], "text_mask must be bool (B, L)"
        assert bool(text_mask.any(1).all()), "a text_mask row is empty (an empty sequence)"

    def forward(self, text_emb, text_mask, frame_mask, layout=None, target_mu=None, return_attention=False):
        """Teacher-forced length: T and frame_mask come from the target sequences.

        text_emb (B, L, text_dim), text_mask (B, L), frame_mask (B, T), layout (spans (B, L, 2),
        chars (B, U)) from data.text_layout, needed with an alignment →
        dict(mu=(B, T, 80), logvar=(B, T, 80), length_ratio=(B,)), and with return_attention the
        cross-attention weights (layers, B, T, L). With aligned queries also `positions` (see
        align) and, with "mas" and the target means target_mu (B, T, 80), the alignment losses.
        """
        assert text_emb.dim() == 3 and text_emb.shape[-1] == self.text_dim, f"text_emb must be (B, L, {self.text_dim})"
        assert text_mask.dtype == frame_mask.dtype == torch.bool, "text_mask and frame_mask must be bool tensors"
        assert bool(text_mask.any(1).all() and frame_mask.any(1).all()), "a mask row is empty (an empty sequence)"
        memory = self.encode_text(text_emb, text_mask)                                # (B, L, D)
        positions, result = self.align(memory, text_mask, layout, frame_mask, target_mu)
        out = self.decode(memory, text_mask, frame_mask, positions, return_attention)  # (B, T, 80) ×2
        result.update(mu=out[0], logvar=out[1], length_ratio=self.length_ratio(memory, text_mask))
        if return_attention:
            result["attention"] = out[2]                                              # (layers, B, T, L)
        return result

    def align(self, memory, text_mask, layout, frame_mask, target_mu=None):
        """((q, intervals, chars) for decode, dict(positions=(p (B, T), token intervals (B, L, 2)) on
        the text axis normalised to [0, 1], the alignment losses)); (None, {}) without alignment."""
        if not self.aligned_queries:
            return None, {}
        assert layout is not None, "aligned queries need the text layout (data.text_layout)"
        d, intervals, losses = self.durations(memory, text_mask, layout, frame_mask, target_mu)
        q = frame_positions(d, frame_mask)                                            # (B, T)
        total = intervals[..., 1].amax(1)[:, None]                                    # (B, 1)
        return (q, intervals, layout[1]), dict(positions=(q / total, intervals / total[..., None]), **losses)

    def predict_lengths(self, ratio):
        """round(ratio * max_frames) clamped to [1, max_frames] (as in DARSLP); (B,) long."""
        return torch.round(ratio * self.max_frames).long().clamp(1, self.max_frames)

    @torch.no_grad()
    def generate(self, text_emb, text_mask, decode_fn, sample=True, rng=None, lengths=None, layout=None):
        """Poses for a batch of sentences: a list of (N_i, 178, 3) tensors.

        Lengths are predicted (or given), the decoder runs once for the whole batch, and
        z = μ̂ + σ̂ ⊙ ε with ε ~ N(0, I) drawn from the torch.Generator `rng` (z = μ̂ when sample=False) is
        decoded by `decode_fn` (the VAE decoder: (..., 80) → (..., 178, 3)). Runs in eval mode.
        ε is one (B, max N_i, 80) draw, so a sample's noise depends on the batch it is in;
        `rng` must live on the model's device.
        """
        self._check(text_emb, text_mask)
        was_training = self.training
        self.eval()
        try:
            memory = self.encode_text(text_emb, text_mask)                            # (B, L, D)
            if lengths is None:
                lengths = self.predict_lengths(self.length_ratio(memory, text_mask))  # (B,)
            else:
                lengths = torch.as_tensor(lengths, dtype=torch.long, device=memory.device)
                assert lengths.shape == (text_emb.shape[0],) and bool((lengths >= 1).all()), \
                    f"lengths must hold one positive int per sample, got {lengths.tolist()}"
            frame_mask = lengths_to_mask(lengths)                                     # (B, T)
            positions, _ = self.align(memory, text_mask, layout, frame_mask)
            mu_hat, logvar_hat = self.decode(memory, text_mask, frame_mask, positions)  # (B, T, 80)
            if sample:
                eps = torch.randn(mu_hat.shape, generator=rng, device=mu_hat.device,
                                  dtype=mu_hat.dtype)                                 # (B, T, 80)
                z = mu_hat + torch.exp(0.5 * logvar_hat) * eps  # reparameterisation (§3.1)
            else:
                z = mu_hat                                                            # (B, T, 80)
            poses = decode_fn(z)                                                      # (B, T, 178, 3)
        finally:
            self.train(was_training)
        return [poses[i, :n] for i, n in enumerate(lengths.tolist())]


# ---------------------------------------------------------------------------------------------
# Losses (§3.3)
# ---------------------------------------------------------------------------------------------

def clamp_logvar(logvar, floor):
    """max(log σ², floor): log-variances below the floor all decode to the same pose (σ is tiny
    against the spread of μ), so Eq. 3 and Eq. 4 treat them as equal. floor=None: unchanged."""
    return logvar if floor is None else logvar.clamp(min=floor)


def latent_l1_loss(mu_hat, logvar_hat, mu, logvar, frame_mask, weights, logvar_floor=None,
                   logvar_weight=1.0):
    """Eq. (3): Σ_a λ_a (‖μ̂^(a) − μ^(a)‖₁ + γ ‖log σ̂²^(a) − log σ²^(a)‖₁) over real frames.

    The paper's literal form is γ = 1 and no floor. With a floor both log-variances are clamped at
    it first (clamp_logvar; not in the paper): differences between values that decode alike are
    not learned. γ (`logvar_weight`, not in the paper) weighs the log σ² term.
    Normalisation (not specified in the paper): each L1 norm is averaged over the real frames of
    the batch and over the latent dimensions of articulator a, so λ_a weighs articulators of
    different sizes (8, 28, 28, 16) on the same scale. Returns (loss, {a: unweighted term}).
    """
    assert set(weights) == set(ARTICULATOR_ORDER), f"weights {sorted(weights)}: missing or unknown articulators"
    logvar_hat, logvar = clamp_logvar(logvar_hat, logvar_floor), clamp_logvar(logvar, logvar_floor)
    # Real frames only: (n, 80) each, split into {a: (n, size_a)}.
    parts = [split_articulators(t[frame_mask]) for t in (mu_hat, logvar_hat, mu, logvar)]
    per_articulator, loss = {}, 0.0
    for a in ARTICULATOR_ORDER:
        mh, lh, m, lv = (p[a] for p in parts)                                         # (n, size)
        term = (mh - m).abs().mean() + logvar_weight * (lh - lv).abs().mean()
        per_articulator[a] = term
        loss = loss + weights[a] * term  # Eq. (3)
    return loss, per_articulator


def gaussian_kl(mu_hat, logvar_hat, mu, logvar, frame_mask, logvar_floor=None):
    """Eq. (4): Σ_a KL(N(μ̂^(a), σ̂²^(a)) ‖ N(μ^(a), σ²^(a))), averaged over real frames.

    Per dimension KL = ½ [log σ² − log σ̂² + (σ̂² + (μ̂ − μ)²) / σ² − 1]; the sum over
    articulators is the sum over all 80 latent dimensions. With a floor, both log-variances are
    clamped at it first (not in the paper: the exact KL to the near-deterministic posteriors of a
    β = 1e-6 VAE, log σ² down to -50, is ~1e20).
    """
    logvar_hat, logvar = clamp_logvar(logvar_hat, logvar_floor), clamp_logvar(logvar, logvar_floor)
    mh, lh, m, lv = (t[frame_mask] for t in (mu_hat, logvar_hat, mu, logvar))      # (n, 80)
    kl = 0.5 * (lv - lh + (lh.exp() + (mh - m) ** 2) * torch.exp(-lv) - 1.0)  # Eq. (4)  # (n, 80)
    return kl.sum(-1).mean()


def frame_positions(durations, frame_mask):
    """Every frame's place on the text's unit axis, q (B, T): unit u lasts durations[:, u] frames
    (real-valued or whole), starting at B_u = Σ_{v<u} d_v, and frame t (its centre t + 0.5) lies in
    the unit u whose frames hold it, at q_t = u + (t + 0.5 − B_u) / d_u. Padded frames: 0."""
    ends = durations.cumsum(1)                                                      # (B, U)
    t = torch.arange(frame_mask.shape[1], device=ends.device, dtype=ends.dtype) + 0.5  # (T,)
    u = (ends[:, None, :] <= t[None, :, None]).sum(-1).clamp(max=ends.shape[1] - 1)  # (B, T)
    start = (ends - durations).gather(1, u)                                         # (B, T)
    d = durations.gather(1, u).clamp_min(1e-6)                                      # (B, T)
    q = u + ((t[None] - start) / d).clamp(0.0, 1.0)                                 # (B, T)
    return q.masked_fill(~frame_mask, 0.0)


def alignment_prior_cost(frame_mask, unit_mask, width=0.2):
    """A weak diagonal prior for the alignment search, (B, T, U): (p_t − c_u)² / 2w², with p_t and c_u
    the frame's and the unit's centres as fractions of their sequences; it only decides between
    alignments that fit the targets equally well (early in training, when the anchors are random)."""
    p = (torch.arange(frame_mask.shape[1], device=frame_mask.device) + 0.5) / frame_mask.sum(1, keepdim=True)
    c = (torch.arange(unit_mask.shape[1], device=unit_mask.device) + 0.5) / unit_mask.sum(1, keepdim=True)
    return (p[:, :, None] - c[:, None, :]) ** 2 / (2 * width ** 2)                  # (B, T, U)


@torch.no_grad()
def monotonic_alignment(cost, frame_mask, unit_mask):
    """Monotonic alignment search (Kim et al. 2020, Glow-TTS): the durations (B, U) in frames of the
    path that assigns frames 0..T_b−1 in order to units 0..U_b−1 in order, every unit at least one
    frame, with the least total cost (B, T, U). Dynamic programming over t:
        Q[t, u] = cost[t, u] + min(Q[t−1, u], Q[t−1, u−1]),   Q[0, 0] = cost[0, 0],
    then the path is read back from (T_b−1, U_b−1). A sample with fewer frames than units gets
    equal durations (no such path exists)."""
    B, T, U = cost.shape
    big = torch.finfo(cost.dtype).max / 4
    cost = cost.masked_fill(~unit_mask[:, None], big)
    Q = torch.full_like(cost, big)                                                  # (B, T, U)
    Q[:, 0, 0] = cost[:, 0, 0]
    for t in range(1, T):
        moved = torch.cat([torch.full_like(Q[:, t - 1, :1], big), Q[:, t - 1, :-1]], 1)   # (B, U)
        Q[:, t] = (cost[:, t] + torch.minimum(Q[:, t - 1], moved)).clamp(max=big)
    n_frames, n_units = frame_mask.sum(1), unit_mask.sum(1)                         # (B,)
    rows = torch.arange(B, device=cost.device)
    u = n_units - 1                                                                 # (B,)
    durations = torch.zeros(B, U, dtype=cost.dtype, device=cost.device)
    for t in range(T - 1, -1, -1):
        active = t < n_frames                                                       # (B,)
        durations[rows, u] += active.to(cost.dtype)
        if t > 0:
            move = active & (u > 0) & (Q[rows, t - 1, (u - 1).clamp_min(0)] <= Q[rows, t - 1, u])
            u = u - move.long()
    feasible = n_frames >= n_units
    even = unit_mask * (n_frames / n_units)[:, None].to(cost.dtype)
    return torch.where(feasible[:, None], durations, even)


def guided_attention_loss(attention, prior, p, text_mask, frame_mask, width):
    """Guided attention (Tachibana et al. 2018, for non-autoregressive TTS; not in the paper):
    mean over layers and real frames of Σ_l a_tl · (1 − exp(−d_tl² / 2g²)), where d_tl is how far
    frame t's prior position p_t lies outside token l's interval and g = `width` (normalised text
    length). Attention on the tokens the prior places under a frame costs nothing; attention far
    from the diagonal costs up to 1.

    attention (layers, B, T, L); p (B, T) and prior (B, L, 2): the `positions` of A2VSLP.forward.
    """
    start, end, pt = prior[..., 0][:, None], prior[..., 1][:, None], p[..., None]   # (B,1,L), (B,T,1)
    d = (start - pt).clamp_min(0) + (pt - end).clamp_min(0)                          # (B, T, L)
    penalty = 1.0 - torch.exp(-d ** 2 / (2 * width ** 2))                           # (B, T, L)
    penalty = penalty.masked_fill(~text_mask[:, None], 0.0)
    cost = (attention * penalty).sum(-1)                                            # (layers, B, T)
    return cost[:, frame_mask].mean()


def length_loss(ratio_hat, frames, max_frames):
    """L1 between the predicted ratio (B,) and min(frames / max_frames, 1) (as in DARSLP)."""
    frames = torch.as_tensor(frames, device=ratio_hat.device)
    assert frames.shape == ratio_hat.shape and max_frames >= 1, f"shapes {tuple(frames.shape)}, {tuple(ratio_hat.shape)}"
    target = (frames.to(ratio_hat.dtype) / max_frames).clamp(max=1.0)                 # (B,)
    return (ratio_hat - target).abs().mean()


def training_loss(model, batch, cfg, boost=None, rank_mean=lambda t: t):
    """The §3.3 objective of one batch, as train.py's loop calls it:
        Eq. 3 (λ_a from Eq. 7's boost, or cfg's fixed weights) + the length term
        + the alignment's terms (anchors, durations, guided attention; not in the paper)
        + cfg.kl_weight · Eq. 4 in phase 2.
    In training (model.training) it then takes the Eq. 8 step of `boost` with this batch's
    unweighted hand and other terms, averaged over the ranks by `rank_mean` so that every rank keeps
    the same s(t). batch: data.collate's dict with "latent" (B, T, 160) = the VAE's [μ ‖ log σ²].
    cfg.max_frames must be set (the stage sets it from the data). Returns (total, logs, out), out
    the model's outputs (μ̂, log σ̂², ...)."""
    mask = batch["frame_mask"]                                                      # (B, T)
    mu, logvar = batch["latent"].chunk(2, -1)                                       # (B, T, 80) each
    guide = cfg.guide_weight > 0 and model.training
    layout = (batch["text_spans"], batch["text_chars"]) if "text_spans" in batch else None
    out = model(batch["text_emb"], batch["text_mask"], mask, layout, target_mu=mu, return_attention=guide)
    weights = boost.weights(face=cfg.fixed_weights[2]) if boost is not None else cfg.loss_weights()
    l1, terms = latent_l1_loss(out["mu"], out["logvar"], mu, logvar, mask, weights, cfg.logvar_floor,
                               cfg.logvar_weight)                                   # Eq. (3)
    length = length_loss(out["length_ratio"], batch["lengths"], cfg.max_frames)
    total = l1 + cfg.length_weight * length
    logs = {"latent_l1": l1, "length": length, **{f"L_{a}": t for a, t in terms.items()}}
    for k in ("anchor", "duration"):     # the alignment search's anchors and the duration predictor
        if k in out:
            logs[k] = out[k]
            total = total + out[k]
    if guide:
        p, prior = out["positions"]
        logs["guide"] = guided_attention_loss(out["attention"], prior, p, batch["text_mask"], mask,
                                              cfg.guide_width)
        total = total + cfg.guide_weight * logs["guide"]
    if cfg.phase == 2:
        logs["kl"] = gaussian_kl(out["mu"], out["logvar"], mu, logvar, mask, cfg.logvar_floor)  # Eq. (4)
        total = total + cfg.kl_weight * logs["kl"]
    if boost is not None and model.training:
        pair = torch.stack([terms["right_hand"] + terms["left_hand"], terms["body"] + terms["face"]])
        hand, other = rank_mean(pair.detach() / 2).tolist()
        if math.isfinite(hand + other):  # else the loss is not finite either: the loop stops or skips
            logs["s"] = torch.tensor(boost.step(hand, other))                       # Eq. (8)
    return total, logs, out


# ---------------------------------------------------------------------------------------------
# Dynamic hand weighting (§4.4.3)
# ---------------------------------------------------------------------------------------------

class HandWeightBoost:
    """Shared boost s(t) of the hand weights, Eq. (7)–(8).

    Call `weights()` for the λ_a of the current step, then `step(hand, other)` with the unweighted
    hand loss (L_RH + L_LH) and non-hand loss (L_body + L_face) of that step. s starts at 1; the
    EMAs start at the first values seen. α and the EMA decay are not given in the paper: decay
    0.99 averages over ~100 batches, and α = 0.01 lets a steady 1.5× hand/other ratio lift s from 1
    to 4 in ~340 steps, i.e. adaptation over a few hundred steps.
    """

    def __init__(self, base=(3.5, 2.5), s_max=4.0, alpha=0.01, ema_decay=0.99, eps=1e-8):
        assert len(base) == 2 and min(base) > 0 and s_max >= 1, f"base {base} (two weights > 0), s_max {s_max} (>= 1)"
        assert alpha >= 0 and 0 <= ema_decay < 1 and eps > 0, f"alpha {alpha}, ema_decay {ema_decay}, eps {eps}"
        self.base = (float(base[0]), float(base[1]))
        self.s_max, self.alpha = float(s_max), float(alpha)
        self.ema_decay, self.eps = float(ema_decay), float(eps)
        self.s, self.ema_hand, self.ema_other, self.steps = 1.0, None, None, 0

    def weights(self, face=2.0, body=1.0):
        """λ_a of the current step; face and body weights stay fixed."""
        b_rh, b_lh = self.base
        lam_rh, lam_lh = b_rh * self.s, b_lh * self.s  # Eq. (7)
        return {"body": float(body), "right_hand": lam_rh, "left_hand": lam_lh, "face": float(face)}

    def step(self, hand_loss, other_loss):
        """Update the EMAs with this step's unweighted losses and return s(t+1)."""
        hand, other = float(hand_loss), float(other_loss)
        assert math.isfinite(hand) and math.isfinite(other) and hand >= 0 and other >= 0, f"losses {hand}, {other}"
        if self.ema_hand is None:
            self.ema_hand, self.ema_other = hand, other
        else:
            d = self.ema_decay
            self.ema_hand = d * self.ema_hand + (1 - d) * hand
            self.ema_other = d * self.ema_other + (1 - d) * other
        ratio = self.ema_hand / (self.ema_other + self.eps)
        self.s = min(max(self.s * ratio ** self.alpha, 1.0), self.s_max)  # Eq. (8)
        self.steps += 1
        return self.s

    def state_dict(self):
        return {"s": self.s, "ema_hand": self.ema_hand, "ema_other": self.ema_other,
                "steps": self.steps}

    def load_state_dict(self, state):
        self.s = float(state["s"])
        self.ema_hand = None if state["ema_hand"] is None else float(state["ema_hand"])
        self.ema_other = None if state["ema_other"] is None else float(state["ema_other"])
        self.steps = int(state["steps"])
